//! Demo part: the transparent DNS cache — a miss, then a hit with a lower TTL, as the client
//! and the daemon's log see them.
use anyhow::Result;
use velocache_tests::{Lab, addr, dns::unbound_zone};

use super::{Demo, Part, Setup};

pub const PART: Part = Part {
    name: "transparent DNS cache",
    setup,
    run,
};

fn setup(lab: &Lab, dir: &std::path::Path) -> Result<Setup> {
    velocache_tests::require_tools(&["unbound", "dig"]);
    let zone = unbound_zone(&lab.origin, dir, &[addr::ORIGIN], "");
    let config = format!("[dns]\nupstreams = [\"{}:53\"]\n", addr::ORIGIN);
    Ok((vec![zone], config))
}

/// dig's status line and answer records, indented.
fn dig(demo: &Demo<'_>, server: &str, name: &str) -> Result<()> {
    let out = demo.client(&["dig", "+time=3", "+tries=1", &format!("@{server}"), name])?;
    for line in out.lines() {
        let answer = !line.starts_with(';') && !line.trim().is_empty();
        if line.contains("status:") || line.starts_with(";; SERVER") || answer {
            println!("    {}", line.trim_start_matches(";; ").trim());
        }
    }
    Ok(())
}

fn run(demo: &mut Demo<'_>) -> Result<()> {
    demo.step(&format!(
        "client: dig @{} www.test.lab — the client's own resolver, nothing configured: a miss",
        addr::ORIGIN
    ));
    dig(demo, addr::ORIGIN, "www.test.lab")?;
    demo.settle(200);
    demo.print_log();

    demo.step("two seconds later, the same question: a hit, answered by the gateway, TTL lower");
    demo.settle(2000);
    dig(demo, addr::ORIGIN, "www.test.lab")?;
    demo.settle(200);
    demo.print_log();

    demo.step(&format!(
        "a resolver that does not even exist ({}): answered from the cache, from that address",
        addr::ORIGIN2
    ));
    dig(demo, addr::ORIGIN2, "www.test.lab")?;
    demo.settle(200);
    demo.print_log();

    demo.step("NXDOMAIN is cached too, for the zone's SOA minimum (5 s here)");
    dig(demo, addr::ORIGIN, "nope.test.lab")?;
    dig(demo, addr::ORIGIN, "nope.test.lab")?;
    demo.settle(200);
    demo.print_log();
    Ok(())
}
