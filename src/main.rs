use std::process::ExitCode;

fn main() -> ExitCode {
    fountain::cli::main()
}
