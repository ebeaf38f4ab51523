//! The `seckill` binary: parse the command line and dispatch.

use std::process::ExitCode;

use clap::Parser;

use seckill::auth::Auth;
use seckill::cli::{
    Cli, Command, DoctorArgs, EventsCommand, ExportArgs, JournalCommand, LoadArgs, LotteryCommand,
    OrdersCommand, PowCommand, TailArgs, TokenArgs,
};
use seckill::sale::model::is_valid_id;
use seckill::store::journal::read;
use seckill::{clock, config, load, logging, serve};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match config::resolve(&args) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("seckill: {error}");
                    return ExitCode::from(2);
                }
            };
            logging::init(&config.log_level, config.log_format);
            match serve::serve(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "seckill stopped");
                    eprintln!("seckill: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token(args) => print_token(&args),
        Command::Doctor(args) => doctor(&args),
        Command::Journal(JournalCommand::Verify { data_dir }) => verify_journal(&data_dir),
        Command::Load(args) => run_load(args),
        Command::Orders(OrdersCommand::Export(args)) => export_orders(args),
        Command::Events(EventsCommand::Tail(args)) => tail_events(args),
        Command::Pow(PowCommand::Solve { challenge, bits }) => solve_pow(&challenge, bits),
        Command::Lottery(LotteryCommand::Verify { addr, sku }) => verify_lottery(&addr, &sku),
    }
}

/// `seckill lottery verify`: the result on stdout, exit 1 if the draw does not verify.
fn verify_lottery(addr: &str, sku: &str) -> ExitCode {
    if !is_valid_id(sku) {
        eprintln!("seckill lottery verify: --sku must be 1 to 64 characters from [A-Za-z0-9_-]");
        return ExitCode::from(2);
    }
    match seckill::lottery_verify::verify(addr, sku) {
        Ok(verified) => {
            println!(
                "verified: {} registrants, {} winners; the seed matches the commitment and \
                 draws the published order",
                verified.registrants, verified.winners
            );
            for winner in verified.winner_ids {
                println!("winner {winner}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("seckill lottery verify: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `seckill pow solve`: the nonce on stdout; exit 2 if the challenge is not 64 hex digits.
fn solve_pow(challenge: &str, bits: u8) -> ExitCode {
    let mut bytes = [0u8; 32];
    if hex::decode_to_slice(challenge.trim(), &mut bytes).is_err() {
        eprintln!("seckill pow solve: --challenge must be 64 hex digits");
        return ExitCode::from(2);
    }
    let started = std::time::Instant::now();
    let nonce = seckill::sale::pow::solve(&bytes, bits);
    let took = started.elapsed();
    println!("{nonce}");
    eprintln!(
        "{} hashes in {:.1} ms",
        nonce.saturating_add(1),
        took.as_secs_f64() * 1e3
    );
    ExitCode::SUCCESS
}

/// `seckill events tail`: messages on stdout; exit 1 if the broker or stream cannot be read.
fn tail_events(args: TailArgs) -> ExitCode {
    let options = seckill::feed::tail::TailOptions {
        url: args.events,
        stream: args.stream,
        subject_prefix: args.subject_prefix,
        sku: args.sku,
        from_start: args.from_start,
        count: args.count,
        idle_exit: args.idle_exit_ms.map(std::time::Duration::from_millis),
    };
    match seckill::feed::tail::run(&options) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("seckill events tail: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `seckill orders export`: orders on stdout, a count on stderr; exit 1 on any failure (what was
/// written before it is a prefix of the full export).
fn export_orders(args: ExportArgs) -> ExitCode {
    let options = seckill::export::ExportOptions {
        addr: args.addr,
        admin_token: args.admin_token,
        sku: args.sku,
        status: args.status,
        format: args.format,
        page_size: usize::from(args.page_size),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match seckill::export::export(&options, &mut out) {
        Ok(count) => {
            eprintln!("seckill orders export: {count} orders");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("seckill orders export: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `seckill load`: progress lines on stderr, the report on stdout (text, or JSON with `--json`).
fn run_load(args: LoadArgs) -> ExitCode {
    let json = args.json;
    let options = load::LoadOptions::from(args);
    let report = match load::run_with_progress(&options, |progress| eprintln!("{progress}")) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("seckill load: {error}");
            return ExitCode::from(error.exit_code());
        }
    };
    if !json {
        print!("{report}");
        return ExitCode::SUCCESS;
    }
    match report.to_json() {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("seckill load: cannot encode the report: {error}");
            ExitCode::FAILURE
        }
    }
}

fn doctor(args: &DoctorArgs) -> ExitCode {
    // Doctor usually runs by hand, without the unit's EnvironmentFile: missing secrets are its
    // `secrets` warning, not a refusal to check the rest.
    let mut serve = args.serve.clone();
    serve.allow_dev_on_public = true;
    let config = match config::resolve(&serve) {
        Ok(config) => config,
        Err(error) => {
            println!("FAIL  config         {error}\n      fix: correct the configuration");
            return ExitCode::FAILURE;
        }
    };
    let checks = seckill::doctor::run(&config);
    for check in &checks {
        println!("{check}");
    }
    let failed = checks
        .iter()
        .filter(|check| check.verdict == seckill::doctor::Verdict::Fail)
        .count();
    if failed > 0 {
        println!("{failed} check(s) failed");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn verify_journal(data_dir: &std::path::Path) -> ExitCode {
    match read::read_newest(data_dir) {
        Ok((None, _)) => {
            println!("{}: no journal yet (nothing to verify)", data_dir.display());
            ExitCode::SUCCESS
        }
        Ok((Some(generation), contents)) => {
            let events: usize = contents.shards.iter().map(|log| log.events.len()).sum();
            println!(
                "{}: generation {generation}: {} shard(s), {} file(s), {events} event(s): ok",
                data_dir.display(),
                contents.shards.len(),
                contents.files,
            );
            for log in &contents.shards {
                println!("  {}: {} event(s)", log.dir.display(), log.events.len());
            }
            for torn in &contents.torn_tails {
                println!(
                    "  {}: torn record at the tail (crash mid-write); startup cuts it off",
                    torn.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("{}: {error}", data_dir.display());
            ExitCode::FAILURE
        }
    }
}

fn print_token(args: &TokenArgs) -> ExitCode {
    if !is_valid_id(&args.user) {
        eprintln!("seckill: --user must be 1 to 64 characters from [A-Za-z0-9_-]");
        return ExitCode::from(2);
    }
    let secret = match config::token_secret(args.config.as_deref()) {
        Ok(secret) => secret,
        Err(error) => {
            eprintln!("seckill: {error}");
            return ExitCode::from(2);
        }
    };
    // Any non-empty secret verifies; the length rule is enforced by `serve`.
    let auth = Auth::new("", &secret);
    let expires = clock::now_ms() / 1000 + args.ttl_secs;
    println!("{}", auth.mint(&args.user, expires));
    ExitCode::SUCCESS
}
