use clap::Parser;

// Linked for its C symbols (`inflate`, `deflate`, ...), which take the place of the system
// libz's for libgit2: zlib-rs inflates about twice as fast here (17 ms against 32 ms for the
// largest file of the python closure), and inflating is most of what a cold read costs.
use libz_rs_sys as _;

fn main() {
    let cli = grove::cli::Cli::parse();
    if let Err(e) = grove::cli::run(cli) {
        eprintln!("{}", grove::cli::report(&e));
        std::process::exit(1);
    }
}
