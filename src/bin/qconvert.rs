//! qconvert: convert Hugging Face checkpoints to GGUF. Not built yet: this binary only says so (issue 3).

use clap::Parser;

/// convert Hugging Face checkpoints to GGUF (not built yet)
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Arguments, ignored until qconvert is built.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

fn main() {
    let _ = Args::parse();
    eprintln!("qconvert: not built yet (tracked as issue 3); nothing was done");
    std::process::exit(2);
}
