//! `pie-ls bench pie`: speed and fidelity of PIE against full recomputation and the peers.

/// Arguments of `pie-ls bench pie`.
#[derive(Debug, Clone, clap::Args)]
pub struct PieBenchArgs {
    /// Model spec (path or hf:...); default: $PIE_LS_MODEL, then the default model.
    #[arg(long)]
    pub model: Option<String>,
}

/// Run the PIE benchmark.
pub fn run_pie_bench(args: PieBenchArgs) -> anyhow::Result<()> {
    let _ = args;
    Ok(())
}
