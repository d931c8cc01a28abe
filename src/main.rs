#![deny(clippy::expect_used)]

use std::io::Write;
use std::process::ExitCode;

use wsim::config::Settings;

#[actix_web::main]
async fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let settings = match Settings::from_process() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wsim: {e}");
            return ExitCode::from(2);
        }
    };
    let running = match wsim::server::start(settings).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wsim: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        for a in &running.addrs {
            let _ = writeln!(out, "wsim listening on http://{a}");
        }
        let _ = writeln!(out, "wsim public url {}", running.public_url);
        let _ = out.flush();
    }
    match running.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsim: {e}");
            ExitCode::FAILURE
        }
    }
}
