//! The `gatehouse` binary: see [`gatehouse::cli`].

// A thread-caching allocator: the proxy allocates and frees small buffers
// on every request, on every worker thread.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gatehouse::cli::main()
}
