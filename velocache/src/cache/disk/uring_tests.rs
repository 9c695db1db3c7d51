//! The ring against real files in a temporary directory.
use super::*;

#[tokio::test]
async fn write_read_rename_unlink_through_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Uring::start(32).unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let fd = ring
        .open(cpath(&a).unwrap(), libc::O_CREAT | libc::O_WRONLY, 0o644)
        .await
        .unwrap();
    let data = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<_>>());
    ring.write(fd.clone(), 0, data.clone()).await.unwrap();
    ring.write(fd.clone(), data.len() as u64, Bytes::from_static(b"end"))
        .await
        .unwrap();
    ring.sync(fd).await.unwrap();
    ring.rename(cpath(&a).unwrap(), cpath(&b).unwrap())
        .await
        .unwrap();
    let fd = ring
        .open(cpath(&b).unwrap(), libc::O_RDONLY, 0)
        .await
        .unwrap();
    let got = ring.read(fd.clone(), 0, 300_000).await.unwrap();
    assert_eq!(&got[..200_000], &data[..]);
    assert_eq!(&got[200_000..], b"end");
    let tail = ring.read(fd, 199_999, 10).await.unwrap();
    assert_eq!(tail.len(), 4);
    ring.unlink(cpath(&b).unwrap(), false).await.unwrap();
    assert!(!b.exists());
    let sub = dir.path().join("sub");
    ring.mkdir(cpath(&sub).unwrap()).await.unwrap();
    ring.mkdir(cpath(&sub).unwrap()).await.unwrap();
    ring.unlink(cpath(&sub).unwrap(), true).await.unwrap();
    let missing = ring
        .open(cpath(&dir.path().join("nope")).unwrap(), libc::O_RDONLY, 0)
        .await;
    assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_operations_complete() {
    let dir = tempfile::tempdir().unwrap();
    let ring = Uring::start(8).unwrap();
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let ring = ring.clone();
        let path = dir.path().join(format!("f{i}"));
        tasks.push(tokio::spawn(async move {
            let fd = ring
                .open(cpath(&path).unwrap(), libc::O_CREAT | libc::O_RDWR, 0o644)
                .await
                .unwrap();
            let body = Bytes::from(vec![i as u8; 4096 + i as usize]);
            ring.write(fd.clone(), 0, body.clone()).await.unwrap();
            assert_eq!(ring.read(fd, 0, 10_000).await.unwrap(), body);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
