//! The `gatehouse` binary: see [`gatehouse::cli`].

fn main() -> std::process::ExitCode {
    gatehouse::cli::main()
}
