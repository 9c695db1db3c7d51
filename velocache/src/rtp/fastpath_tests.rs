//! The RTP program as an interface runs it — through the XDP dispatcher, in its slot — fed
//! crafted frames with `BPF_PROG_TEST_RUN`: no interface, no network, nothing attached.
//!
//! Test runs enter on `lo` in this process's network namespace, where the slot is enabled
//! without a link. The FIB lookup never succeeds there, so every learned frame is passed
//! (unmodified) after being counted — exactly the path a frame takes when its neighbour is not
//! resolved yet. Redirection and address rewriting are exercised in the namespace lab
//! (`tests/integration/sip.rs`). Needs root, like the daemon (`crate::testutil`).
use velocache_common::xdp::{XDP_DISPATCHER, XdpSlot};

use super::*;
use crate::{
    datapath::{XdpOwner, XdpSettings},
    rtp::FlowSpec,
    testutil::require_root,
};

const XDP_PASS: u32 = 2;
const SRC: &str = "192.0.2.10:6000";
const DST: &str = "198.51.100.20:7000";

/// Ethernet + IPv4 + UDP + RTP (PCMA, 160 bytes of payload).
fn frame(src: &str, dst: &str, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let src: std::net::SocketAddrV4 = src.parse().unwrap();
    let dst: std::net::SocketAddrV4 = dst.parse().unwrap();
    let payload = 12 + 160;
    let mut f = vec![0u8; 14];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let tot = (20 + 8 + payload) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&tot.to_be_bytes());
    ip.extend_from_slice(&src.ip().octets());
    ip.extend_from_slice(&dst.ip().octets());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x80, 8]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ts.to_be_bytes());
    f.extend_from_slice(&ssrc.to_be_bytes());
    f.extend_from_slice(&[0xd5; 160]);
    f
}

/// One frame through the dispatcher: (action, frame afterwards).
fn run(xdp: &XdpOwner, data: &[u8]) -> (u32, Vec<u8>) {
    xdp.test_run(XDP_DISPATCHER, data)
}

fn spec(rtcp: bool) -> FlowSpec {
    FlowSpec {
        from: SRC.parse().unwrap(),
        to: DST.parse().unwrap(),
        rewrite: None,
        clock_rate: 8000,
        rtcp,
        srtp: false,
    }
}

/// The slot claimed from a fresh owner (no interfaces, no pins) and enabled on `lo`, where test
/// runs enter.
fn fast_path() -> (XdpOwner, FastPath) {
    require_root("loading BPF programs");
    let xdp = XdpOwner::new(XdpSettings::default());
    let maps = xdp.claim(XdpSlot::Rtp, &[]).unwrap();
    xdp.enable_for_test(lo(), &[XdpSlot::Rtp]);
    (xdp, FastPath::new(maps).unwrap())
}

fn lo() -> u32 {
    nix::net::if_::if_nametoindex("lo").unwrap()
}

#[test]
fn frames_of_unlearned_flows_pass_untouched_and_uncounted() {
    let (xdp, fp) = fast_path();
    let f = frame(SRC, DST, 1, 160, 7);
    let (action, out) = run(&xdp, &f);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out, f);
    assert!(fp.stats(&spec(false)).is_none());
    // Runts and non-IP frames too.
    for bad in [&f[..20], &f[..40], &[0u8; 60][..]] {
        assert_eq!(run(&xdp, bad).0, XDP_PASS);
    }
}

#[test]
fn learned_rtp_is_counted_with_gaps_duplicates_and_ssrc_changes() {
    let (xdp, fp) = fast_path();
    let s = spec(false);
    fp.install(&[s]).unwrap();
    // 1 2 3 _ 5 5(dup) 6, then a new source.
    for (seq, ssrc) in [
        (1, 7),
        (2, 7),
        (3, 7),
        (5, 7),
        (5, 7),
        (6, 7),
        (900, 8),
        (901, 8),
    ] {
        let f = frame(SRC, DST, seq, u32::from(seq) * 160, ssrc);
        let (action, out) = run(&xdp, &f);
        // No ingress interface, so no route: counted, then passed as it came.
        assert_eq!(action, XDP_PASS);
        assert_eq!(out, f, "a passed frame is never modified");
    }
    let st = fp.stats(&s).unwrap();
    assert_eq!(st.counters.packets, 8);
    assert_eq!(st.counters.bytes, 8 * (20 + 8 + 12 + 160));
    assert_eq!(st.counters.passed, 8);
    assert_eq!(st.counters.redirected, 0);
    assert!(st.counters.last_seen_ns > 0);
    let q = st.quality;
    assert_eq!(q.duplicates, 1);
    assert_eq!(q.ssrc_changes, 1);
    assert_eq!(q.expected(), 6 + 2);
    assert_eq!(q.lost(), 1);
    assert_eq!(q.ssrc, 8);

    fp.remove(&[s]);
    assert!(fp.stats(&s).is_none());
    assert_eq!(fp.installed(), 0);
}

#[test]
fn rtcp_flows_are_counted_without_rtp_tracking() {
    let (xdp, fp) = fast_path();
    let s = spec(true);
    fp.install(&[s]).unwrap();
    run(&xdp, &frame(SRC, DST, 1, 160, 7));
    let st = fp.stats(&s).unwrap();
    assert_eq!(st.counters.packets, 1);
    assert_eq!(st.quality.started, 0);
}

#[test]
fn reinstalling_a_flow_keeps_its_counters_and_orphans_expire() {
    let (xdp, fp) = fast_path();
    let s = spec(false);
    fp.install(&[s]).unwrap();
    run(&xdp, &frame(SRC, DST, 1, 160, 7));
    fp.install(&[s]).unwrap();
    assert_eq!(fp.stats(&s).unwrap().counters.packets, 1);
    // Known flows are never orphans; unknown ones are once idle.
    assert_eq!(fp.expire_orphans(&[s], 0), 0);
    assert_eq!(fp.expire_orphans(&[], u64::MAX), 0);
    assert_eq!(fp.expire_orphans(&[], 0), 1);
    assert_eq!(fp.installed(), 0);
}

#[test]
fn frames_on_an_interface_without_the_slot_never_reach_the_program() {
    let (xdp, fp) = fast_path();
    let s = spec(false);
    fp.install(&[s]).unwrap();
    xdp.enable_for_test(lo(), &[]);
    let f = frame(SRC, DST, 1, 160, 7);
    assert_eq!(run(&xdp, &f), (XDP_PASS, f.clone()));
    assert_eq!(
        fp.stats(&s).unwrap().counters.packets,
        0,
        "the slot is off on lo"
    );
    xdp.enable_for_test(lo(), &[XdpSlot::Rtp]);
    run(&xdp, &f);
    assert_eq!(fp.stats(&s).unwrap().counters.packets, 1);
}

/// The frames the kernel copied to `RTP_CAPTURE` so far (waits up to `wait` for the first).
fn copies(
    rt: &tokio::runtime::Runtime,
    ring: &mut crate::rtp::capture::CaptureRing,
    wait: std::time::Duration,
) -> Vec<Vec<u8>> {
    rt.block_on(async {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(wait, ring.drain(|f| out.push((f.len, f.data)))).await;
        out.into_iter()
            .map(|(len, data)| {
                assert!(len as usize >= data.len());
                data
            })
            .collect()
    })
}

#[test]
fn only_flows_marked_for_capture_are_copied_as_they_arrived() {
    use std::time::Duration;
    let (xdp, fp) = fast_path();
    // The ring registers with the reactor of the runtime it is made in.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let mut ring = fp.take_capture().unwrap().unwrap();
    assert!(fp.take_capture().is_none(), "handed out once");
    let s = spec(false);
    fp.install(&[s]).unwrap();
    let f = frame(SRC, DST, 1, 160, 7);
    run(&xdp, &f);
    assert!(copies(&rt, &mut ring, Duration::from_millis(200)).is_empty());

    fp.capture(&[s], true).unwrap();
    // Sizes that exercise every chunk of the copy, and one beyond the snap length.
    let mut odd = frame(SRC, DST, 2, 320, 7);
    odd.push(0x11);
    let mut big = frame(SRC, DST, 3, 480, 7);
    big.resize(2100, 0x22);
    for f in [&f, &odd, &big] {
        assert_eq!(run(&xdp, f).0, XDP_PASS);
    }
    let got = copies(&rt, &mut ring, Duration::from_secs(2));
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], f);
    assert_eq!(got[1], odd);
    assert_eq!(got[2], big[..velocache_common::rtp::CAPTURE_BYTES - 1]);

    // A re-install keeps the mark; unmarking stops the copies.
    fp.install(&[s]).unwrap();
    run(&xdp, &f);
    assert_eq!(copies(&rt, &mut ring, Duration::from_secs(2)).len(), 1);
    fp.capture(&[s], false).unwrap();
    run(&xdp, &f);
    assert!(copies(&rt, &mut ring, Duration::from_millis(200)).is_empty());
    assert_eq!(
        fp.stats(&s).unwrap().counters.packets,
        6,
        "counted either way"
    );
}
