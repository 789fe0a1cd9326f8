//! `strand`: the admin CLI. The commands live in the library (`strand_tools`), which
//! `strand-bench` shares.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use strand_tools::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match strand_tools::run(&cli) {
        Ok(text) => {
            write_out(&mut io::stdout(), &text);
            ExitCode::SUCCESS
        }
        Err(err) => {
            write_out(&mut io::stderr(), &format!("error: {err:#}\n"));
            ExitCode::FAILURE
        }
    }
}

/// Writes without panicking: a closed pipe (`strand topic list | head -1`) is not an error.
fn write_out(out: &mut impl Write, text: &str) {
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
