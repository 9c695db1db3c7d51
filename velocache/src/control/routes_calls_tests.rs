//! The call endpoints end to end in one process: the real server on a temporary socket, the
//! real client, a fake observer behind `CallsAdmin`.
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{
        AdminError, AdminHub, CallsAdmin,
        api::{CallsReport, ErrorKind},
        calls_api::{CallShow, CaptureRequest, CaptureStatus, calls_paths},
    },
    control::{Client, ClientError},
    rules::Rules,
};

/// One call, `a@b c`; remembers what was asked of it.
#[derive(Default)]
struct Fake {
    asked: Mutex<Vec<String>>,
}

impl CallsAdmin for Fake {
    fn calls(&self) -> BoxFuture<'_, Result<CallsReport, AdminError>> {
        Box::pin(async { Ok(CallsReport::default()) })
    }
    fn show(&self, call_id: &str) -> Result<CallShow, AdminError> {
        self.asked.lock().unwrap().push(format!("show {call_id}"));
        if call_id != "a@b c" {
            return Err(AdminError::NotFound(format!("no call {call_id}")));
        }
        Ok(CallShow {
            call_id: call_id.into(),
            state: "confirmed".into(),
            ..CallShow::default()
        })
    }
    fn capture_start(&self, call_id: &str) -> Result<CaptureStatus, AdminError> {
        self.asked.lock().unwrap().push(format!("start {call_id}"));
        Ok(CaptureStatus {
            call_id: call_id.into(),
            active: true,
            ..CaptureStatus::default()
        })
    }
    fn capture_stop(&self, call_id: &str) -> Result<CaptureStatus, AdminError> {
        self.asked.lock().unwrap().push(format!("stop {call_id}"));
        Ok(CaptureStatus {
            call_id: call_id.into(),
            stopped: "stopped".into(),
            ..CaptureStatus::default()
        })
    }
    fn pcap(&self, _call_id: &str) -> Result<Vec<u8>, AdminError> {
        Ok(vec![0xd4, 0xc3, 0xb2, 0xa1, 0xff])
    }
}

async fn serve(hub: AdminHub) -> (Client, CancellationToken, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = crate::control::tests::serve(dir.path(), "", Rules::empty(), hub, |_| {}).await;
    (s.client, s.cancel, dir)
}

fn kind<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, ErrorKind) {
    match r {
        Err(ClientError::Api { status, body }) => (status, body.kind),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_call_endpoints_reach_the_observer_with_decoded_call_ids() {
    let hub = AdminHub::new();
    let fake = Arc::new(Fake::default());
    hub.register_calls(fake.clone());
    let (client, cancel, _dir) = serve(hub).await;

    let show: CallShow = client
        .get(&format!("{}?call_id=a%40b%20c", calls_paths::SHOW))
        .await
        .unwrap();
    assert_eq!(
        (show.call_id.as_str(), show.state.as_str()),
        ("a@b c", "confirmed")
    );
    let req = CaptureRequest {
        call_id: "a@b c".into(),
    };
    let started: CaptureStatus = client.post(calls_paths::CAPTURE, &req).await.unwrap();
    assert!(started.active);
    let stopped: CaptureStatus = client.post(calls_paths::CAPTURE_STOP, &req).await.unwrap();
    assert_eq!(stopped.stopped, "stopped");
    let pcap = client
        .get_bytes(&format!("{}?call_id=x", calls_paths::PCAP))
        .await
        .unwrap();
    assert_eq!(&pcap[..], &[0xd4, 0xc3, 0xb2, 0xa1, 0xff]);
    assert_eq!(
        *fake.asked.lock().unwrap(),
        ["show a@b c", "start a@b c", "stop a@b c"]
    );

    // Unknown calls, missing ids, wrong methods, unknown paths.
    let r = client
        .get::<CallShow>(&format!("{}?call_id=nope", calls_paths::SHOW))
        .await;
    assert_eq!(kind(r), (404, ErrorKind::NotFound));
    let r = client.get::<CallShow>(calls_paths::SHOW).await;
    assert_eq!(kind(r), (400, ErrorKind::BadRequest));
    let empty = CaptureRequest::default();
    let r = client
        .post::<_, CaptureStatus>(calls_paths::CAPTURE, &empty)
        .await;
    assert_eq!(kind(r), (400, ErrorKind::BadRequest));
    let r = client.get::<CaptureStatus>(calls_paths::CAPTURE).await;
    assert_eq!(kind(r), (400, ErrorKind::BadRequest));
    let r = client.get::<CallShow>("/v1/calls/nothing").await;
    assert_eq!(kind(r), (404, ErrorKind::NoSuchEndpoint));
    cancel.cancel();
}

#[tokio::test]
async fn without_sip_the_call_endpoints_answer_not_available() {
    let (client, cancel, _dir) = serve(AdminHub::new()).await;
    let r = client
        .get::<CallShow>(&format!("{}?call_id=x", calls_paths::SHOW))
        .await;
    assert_eq!(kind(r), (503, ErrorKind::NotAvailable));
    let r = client
        .get_bytes(&format!("{}?call_id=x", calls_paths::PCAP))
        .await;
    assert_eq!(kind(r), (503, ErrorKind::NotAvailable));
    cancel.cancel();
}
