//! The `pie-ls` command line: `serve` (the default) speaks LSP on stdio; the other subcommands manage models and
//! run benchmarks. This file only parses arguments and dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: pie_ls::bench::alloc::CountingAllocator = pie_ls::bench::alloc::CountingAllocator;

#[derive(Parser)]
#[command(name = "pie-ls", version, about = "A local AI language server with position-corrected KV-cache reuse (PIE)")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Write logs to this file instead of stderr (stdout is reserved for LSP).
    #[arg(long, global = true)]
    log_file: Option<PathBuf>,
    /// Model for `serve`: a GGUF path or `hf:owner/repo/file.gguf` (default: $PIE_LS_MODEL, then the default model).
    #[arg(long, global = true)]
    model: Option<String>,
    /// Log filter in `RUST_LOG` syntax (e.g. `info`, `pie_ls=debug`); `RUST_LOG` is used when absent.
    #[arg(long, global = true)]
    log_level: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve LSP on stdin/stdout (the default).
    Serve,
    /// Provision and inspect models (`pie-ls model fetch` downloads the pinned default and test models).
    #[command(subcommand)]
    Model(pie_ls::engine::ModelCommand),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Per-keystroke cost of the document store and memory per open document.
    Keystroke(pie_ls::bench::keystroke::KeystrokeArgs),
    /// Keystroke-to-suggestion latency: PIE vs prefix-only reuse vs the llama.vim layout.
    Completion(pie_ls::bench::completion::CompletionBenchArgs),
    /// The same typing trace through the in-process engine, through pie-ls on a real llama-server, and with
    /// llama.vim's request shape on the same server: keystroke-to-suggestion, first token, tokens evaluated.
    Backends(pie_ls::bench::backends::BackendsBenchArgs),
    /// Decode rate of pie-ls's generation loop against llama.cpp's llama-server, side by side.
    Decode(pie_ls::bench::decode::DecodeBenchArgs),
    /// Completion quality on HumanEval infilling: pass@1 with a PIE-maintained cache vs full recomputation.
    Infill(pie_ls::bench::infill::InfillBenchArgs),
    /// PIE vs full recomputation and the peers: update latency and next-line fidelity on real code.
    Pie(pie_ls::engine::PieBenchArgs),
    /// Self-debug on HumanEval-derived bugs: fix rate after 1 and 3 rounds, false passes.
    Selfdebug(pie_ls::bench::selfdebug::SelfDebugBenchArgs),
    /// "Find a faster version" on the slow-to-fast Python fixtures.
    Perf(pie_ls::bench::perf::PerfBenchArgs),
    /// Drives the real server for --minutes with a long editing session, then checks texts, caches and memory.
    Soak(pie_ls::bench::soak::SoakArgs),
    /// A typing session through the real server: cores busy, time to idle, suggestion latency.
    Typing(pie_ls::bench::typing::TypingBenchArgs),
    /// What a suggestion answered from the text read around the cursor first loses against the whole window.
    FirstRead(pie_ls::bench::firstread::FirstReadBenchArgs),
}

fn main() -> std::process::ExitCode {
    // First, while this is the only thread: may run the binary again with a short OpenMP spin (see the module).
    let spin = pie_ls::engine::openmp::ensure_short_spin();
    // Before llama.cpp allocates: big freed buffers (evicted warm caches) go back to the system.
    let heap = pie_ls::engine::heap::return_freed_buffers();
    // Errors are for users: one clear line (with its causes), never a backtrace.
    match run(Cli::parse(), spin, heap) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, spin: pie_ls::engine::openmp::SpinSetting, heap: pie_ls::engine::heap::HeapSetting) -> anyhow::Result<()> {
    init_logging(cli.log_file.as_deref(), cli.log_level.as_deref())?;
    match (&spin, &cli.command) {
        (pie_ls::engine::openmp::SpinSetting::RerunFailed(_), _) => tracing::warn!("{}", spin.describe()),
        (_, None | Some(Command::Serve)) => tracing::info!("{}", spin.describe()),
        _ => tracing::debug!("{}", spin.describe()),
    }
    match &cli.command {
        None | Some(Command::Serve) => tracing::info!("{}", heap.describe()),
        _ => tracing::debug!("{}", heap.describe()),
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(pie_ls::lsp::serve_stdio(pie_ls::lsp::ServeOptions { model: cli.model }));
            Ok(())
        }
        Command::Model(cmd) => pie_ls::engine::run_model_command(cmd),
        Command::Bench(BenchCommand::Keystroke(args)) => pie_ls::bench::keystroke::run(args),
        Command::Bench(BenchCommand::Completion(args)) => pie_ls::bench::completion::run(args),
        Command::Bench(BenchCommand::Backends(args)) => pie_ls::bench::backends::run(args),
        Command::Bench(BenchCommand::Decode(args)) => pie_ls::bench::decode::run(args),
        Command::Bench(BenchCommand::Infill(args)) => pie_ls::bench::infill::run(args),
        Command::Bench(BenchCommand::Pie(args)) => pie_ls::engine::run_pie_bench(args),
        Command::Bench(BenchCommand::Selfdebug(args)) => pie_ls::bench::selfdebug::run(args),
        Command::Bench(BenchCommand::Perf(args)) => pie_ls::bench::perf::run(args),
        Command::Bench(BenchCommand::Soak(args)) => pie_ls::bench::soak::run(args),
        Command::Bench(BenchCommand::Typing(args)) => pie_ls::bench::typing::run(args),
        Command::Bench(BenchCommand::FirstRead(args)) => pie_ls::bench::firstread::run(args),
    }
}

fn init_logging(log_file: Option<&std::path::Path>, level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level)?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,llama-cpp-2=warn")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|err| anyhow::anyhow!("cannot open log file {}: {err}", path.display()))?;
            builder.with_ansi(false).with_writer(std::sync::Mutex::new(file)).init();
        }
        // Colour codes only for a person at a terminal: an editor's log pane shows them as garbage.
        None => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_writer(std::io::stderr).init(),
    }
    Ok(())
}
