//! qrun: run GGUF models. Not built yet: this binary only says so (issue 4).

use clap::Parser;

/// run GGUF models (not built yet)
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Arguments, ignored until qrun is built.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

fn main() {
    let _ = Args::parse();
    eprintln!("qrun: not built yet (tracked as issue 4); nothing was done");
    std::process::exit(2);
}
