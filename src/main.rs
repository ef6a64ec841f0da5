fn main() {
    // The execution's shepherd is this binary too: answer before anything else starts (no
    // argument parsing, no logging, no threads).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == flowrun_executor::shepherd::ARG)
    {
        flowrun_executor::shepherd::main(&args[2..]);
    }
    // What the caller left open (beyond 0-2) reaches nothing this process starts.
    flowrun_executor::process::close_inherited_on_exec();
    // Not dumpable: the executions it runs are the same user's processes, and must not trace it
    // (and, say, write the store as it) or open its descriptors through /proc. Root still can.
    // SAFETY: prctl with PR_SET_DUMPABLE takes integers and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    // Its wakeups run at once on a busy machine (and those of the shepherds and threads it
    // starts, which inherit it); what runs a workflow gets the default back.
    flowrun_executor::sched::shorten();
    // The `flowrun-shepherd` next to this binary is used only if it was built with it.
    flowrun_app::runner::use_shepherd_built_as(env!("FLOWRUN_SHEPHERD_MARK"));
    std::process::exit(cli::main());
}

mod cli;
