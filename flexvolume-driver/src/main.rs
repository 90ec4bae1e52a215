//! flexvolume-driver: a Flexvolume driver (one call per process, JSON on stdout,
//! nothing on stderr) and, with `serve`, a CSI endpoint on a unix socket.

use std::process::ExitCode;

use flexvolume_driver::{Config, Volumes, flexvolume, logging};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = Config::from_env();
    if args.first().map(String::as_str) == Some("serve") {
        return serve(&args[1..], config);
    }

    logging::init_file(&config.log_file);
    let volumes = Volumes::from_config(&config);
    let reply =
        std::panic::catch_unwind(|| flexvolume::run(&args, &volumes)).unwrap_or_else(|_| {
            flexvolume::Reply::failure("flexvolume-driver hit an internal error; see its log")
        });
    println!("{}", reply.to_json());
    ExitCode::from(reply.exit_code() as u8)
}

fn serve(args: &[String], config: Config) -> ExitCode {
    if config.log_file_explicit {
        logging::init_file(&config.log_file);
    } else {
        logging::init_stderr();
    }
    let endpoint = match args {
        [] => std::env::var("CSI_ENDPOINT").ok(),
        [flag, value] if flag == "--endpoint" => Some(value.clone()),
        [flag] if flag.starts_with("--endpoint=") => Some(flag["--endpoint=".len()..].to_string()),
        _ => None,
    };
    let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) else {
        eprintln!(
            "usage: flexvolume-driver serve [--endpoint unix:///path/csi.sock] (or CSI_ENDPOINT)"
        );
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flexvolume-driver: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        flexvolume_driver::csi::serve(&endpoint, &config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "CSI endpoint failed");
            eprintln!("flexvolume-driver: {e:#}");
            ExitCode::from(1)
        }
    }
}
