//! `flowrun-shepherd`: the execution's shepherd as a binary of its own, started as
//! `flowrun-shepherd __shepherd <lifeline-fd> … -- python …`, the same arguments `flowrun`
//! takes for it. It links the shepherd and nothing else: each execution execs it (a warm
//! spare ahead of its request, a cold start on the way to the interpreter), and a small binary
//! maps, relocates and tears down in a fraction of the time of the whole CLI.

/// What `flowrun` looks for in this file before it execs it (see `build.rs`).
#[used]
static BUILD: &str = env!("FLOWRUN_SHEPHERD_MARK");

use std::io::Write as _;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let rest = match args.get(1) {
        Some(a) if a == flowrun_executor::shepherd::ARG => &args[2..],
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "flowrun-shepherd: started by flowrun for each execution, not by hand (its first argument is {})",
                flowrun_executor::shepherd::ARG
            );
            std::process::exit(2);
        }
    };
    flowrun_executor::shepherd::main(rest);
}
