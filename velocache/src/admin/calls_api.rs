//! The wire types of one call's page: the ladder, per-direction media figures and capture
//! (`GET /v1/calls/show`, `POST /v1/calls/capture`, `POST /v1/calls/capture/stop`,
//! `GET /v1/calls/pcap`).
//!
//! The SIP observer fills them (`sip::ladder`, `sip::capture`) behind [`super::CallsAdmin`];
//! the control plane serialises them, and the CLI (`velocache calls show|capture`) and the web
//! page read them. Every field is always present so a reader never guesses a shape.
use serde::{Deserialize, Serialize};

/// Paths of the call endpoints.
pub mod calls_paths {
    /// `GET ?call_id=X`: [`super::CallShow`].
    pub const SHOW: &str = "/v1/calls/show";
    /// `POST` [`super::CaptureRequest`]: start capturing a call; [`super::CaptureStatus`].
    pub const CAPTURE: &str = "/v1/calls/capture";
    /// `POST` [`super::CaptureRequest`]: stop capturing; [`super::CaptureStatus`].
    pub const CAPTURE_STOP: &str = "/v1/calls/capture/stop";
    /// `GET ?call_id=X`: the capture as a pcap file (`application/vnd.tcpdump.pcap`).
    pub const PCAP: &str = "/v1/calls/pcap";
}

/// One call as its page shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallShow {
    /// Call-ID.
    pub call_id: String,
    /// `calling`, `ringing`, `answered`, `confirmed`, or how it ended (`completed`, …).
    pub state: String,
    /// From URI.
    pub from: String,
    /// To URI.
    pub to: String,
    /// Every message, oldest first (a call keeps its latest 200).
    pub messages: Vec<LadderMessage>,
    /// Older messages no longer kept (a call that looped past the bound).
    pub omitted: u64,
    /// Per direction of each RTP stream.
    pub streams: Vec<StreamFigures>,
    /// The call's capture, if one was started.
    pub capture: Option<CaptureStatus>,
}

/// One SIP message of a call's ladder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LadderMessage {
    /// When the gateway saw it, Unix milliseconds.
    pub ts_ms: u64,
    /// `client->far` or `far->client`.
    pub direction: String,
    /// Sender, `ip:port`.
    pub src: String,
    /// Destination, `ip:port`.
    pub dst: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// The method, or the status (`200 OK`).
    pub label: String,
    /// The CSeq header (`1 INVITE`).
    pub cseq: String,
    /// Message bytes as received.
    pub bytes: u64,
}

/// One direction of one RTP stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamFigures {
    /// `client->far` or `far->client`.
    pub direction: String,
    /// Sender as seen on the wire.
    pub src: String,
    /// Destination as seen on the wire.
    pub dst: String,
    /// `audio`, `video`.
    pub kind: String,
    /// Negotiated codec, if known.
    pub codec: Option<String>,
    /// Packets the kernel saw.
    pub packets: u64,
    /// Of those, forwarded by the XDP fast path itself.
    pub fast_path_packets: u64,
    /// IP bytes.
    pub bytes: u64,
    /// Packets lost (expected − received, never negative).
    pub lost: u64,
    /// Lost / expected, percent.
    pub loss_pct: f64,
    /// RFC 3550 interarrival jitter, ms.
    pub jitter_ms: f64,
    /// MOS estimate; `None` before any RTP.
    pub mos: Option<f64>,
}

/// `POST /v1/calls/capture` and `/v1/calls/capture/stop`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureRequest {
    /// The call to capture.
    pub call_id: String,
}

/// A call's capture.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptureStatus {
    /// The call.
    pub call_id: String,
    /// Still adding packets.
    pub active: bool,
    /// Packets held (SIP and RTP).
    pub packets: u64,
    /// Of those, RTP/RTCP frames the kernel copied.
    pub rtp_packets: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Why it stopped (`stopped`, `limit: 50000 packets`, …); empty while active.
    pub stopped: String,
    /// Kernel copies this capture lost because the daemon fell behind (ring buffer full) are
    /// not counted here; these are packets refused at the capture's bound.
    pub refused: u64,
}
