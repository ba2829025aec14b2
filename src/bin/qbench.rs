//! qbench: benchmark every format against fp16. Not built yet: this binary only says so (issue 7).

use clap::Parser;

/// benchmark every format against fp16 (not built yet)
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Arguments, ignored until qbench is built.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

fn main() {
    let _ = Args::parse();
    eprintln!("qbench: not built yet (tracked as issue 7); nothing was done");
    std::process::exit(2);
}
