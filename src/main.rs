fn main() {
    std::process::exit(flowrun::cli::main());
}
