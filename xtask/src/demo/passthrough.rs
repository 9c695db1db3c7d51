//! Demo part: transparent interception and fail-open, with pass-through handlers.
use anyhow::Result;
use velocache_tests::{Lab, addr, servers};

use super::{Demo, Part, Setup};

pub const PART: Part = Part {
    name: "transparent interception and fail-open",
    setup,
    run,
};

fn setup(lab: &Lab, dir: &std::path::Path) -> Result<Setup> {
    velocache_tests::require_tools(&["nginx", "curl"]);
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("hello.txt"), "hello from the origin\n")?;
    let nginx = servers::nginx_static(&lab.origin, &www, 80, dir);
    Ok((vec![nginx], String::new()))
}

fn run(demo: &mut Demo<'_>) -> Result<()> {
    let url = format!("http://{}/hello.txt", addr::ORIGIN);
    demo.step(&format!(
        "client: curl {url} — no proxy configured anywhere"
    ));
    print!(
        "    {}",
        demo.client(&["curl", "-sS", "--max-time", "5", &url])?
    );
    demo.settle(300);
    demo.print_log();

    demo.step("kill -9 the daemon: traffic must keep flowing (fail-open)");
    demo.daemon.kill9();
    print!(
        "    {}",
        demo.client(&["curl", "-sS", "--max-time", "5", &url])?
    );
    println!("    (served directly by the origin; nobody intercepted it)");

    demo.step("restart: interception resumes, the killed daemon's leftovers are replaced");
    demo.restart();
    print!(
        "    {}",
        demo.client(&["curl", "-sS", "--max-time", "5", &url])?
    );
    demo.settle(300);
    demo.print_log();
    Ok(())
}
