//! Demo part: SIP calls observed, their RTP relayed by the XDP fast path.
//!
//! Two sipp phones answer in `origin`: one on 10.77.2.2 accepts and echoes RTP, one on
//! 10.77.2.3 is busy. A sipp phone in `client` calls both. The daemon logs every SIP message,
//! a call record with setup time and media statistics, and the 486 with its reason.
use anyhow::{Result, bail};
use velocache_tests::{
    Lab, addr,
    sipp::{self, Answer, PCAP_DIR},
    xdp,
};

use super::{Demo, Part, Setup};

pub const PART: Part = Part {
    name: "SIP observation and the in-kernel RTP relay",
    setup,
    run,
};

fn setup(lab: &Lab, dir: &std::path::Path) -> Result<Setup> {
    velocache_tests::require_tools(&["sipp", "ethtool"]);
    xdp::prepare_for_xdp(lab);
    let accept = sipp::write_scenario(dir, "uas.xml", &sipp::uas_scenario(Answer::Accept));
    let busy = sipp::write_scenario(
        dir,
        "busy.xml",
        &sipp::uas_scenario(Answer::Refuse(486, "Busy Here")),
    );
    let uas = sipp::start_uas(&lab.origin, addr::ORIGIN, &accept, 7000, 1, "u1");
    let uas_busy = sipp::start_uas(&lab.origin, addr::ORIGIN2, &busy, 7100, 1, "u1");
    let config = format!(
        "[sip]\nmedia_interfaces = [\"{}\", \"{}\"]\n",
        addr::LAN_IF,
        addr::WAN_IF
    );
    Ok((vec![uas, uas_busy], config))
}

fn run(demo: &mut Demo<'_>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let uac = sipp::write_scenario(
        dir.path(),
        "uac.xml",
        &sipp::uac_scenario(&format!("{PCAP_DIR}/g711a.pcap"), None, 7600, false),
    );
    let uac_busy = sipp::write_scenario(
        dir.path(),
        "uac-busy.xml",
        &sipp::uac_scenario("", None, 0, true),
    );

    demo.step(&format!(
        "client: sipp calls sip:service@{} and plays 7 s of G.711 RTP; the callee echoes it",
        addr::ORIGIN
    ));
    let (out, ok) = sipp::run_uac(
        &demo.lab.client,
        addr::CLIENT,
        addr::ORIGIN,
        &uac,
        6000,
        1,
        "u1",
    );
    if !ok {
        bail!("the call failed:\n{out}");
    }
    println!("    sipp: call completed");
    demo.settle(500);
    demo.print_log();
    println!("    (one `sip` line per message; `media flows installed` when answered; per-stream");
    println!("     `rtp stream` lines and the `call` record with setup time, loss, jitter, MOS)");

    demo.step(&format!(
        "client: sipp calls sip:service@{} — the callee is busy",
        addr::ORIGIN2
    ));
    let (out, ok) = sipp::run_uac(
        &demo.lab.client,
        addr::CLIENT,
        addr::ORIGIN2,
        &uac_busy,
        6100,
        1,
        "u1",
    );
    if !ok {
        bail!("the busy call did not end as expected:\n{out}");
    }
    demo.settle(300);
    demo.print_log();
    Ok(())
}
