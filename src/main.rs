use clap::Parser;

fn main() {
    let cli = grove::cli::Cli::parse();
    if let Err(e) = grove::cli::run(cli) {
        eprintln!("{}", grove::cli::report(&e));
        std::process::exit(1);
    }
}
