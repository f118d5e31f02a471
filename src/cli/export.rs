//! `vqgrad export-shaders`: the WGSL sources, and naga's SPIR-V, MSL and HLSL translations, written as files for
//! loading the kernels in other runtimes.

use anyhow::Context;
use std::path::PathBuf;
use vqgrad::shaders::{self, translate};

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Directory to write into (made if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Also SPIR-V (Vulkan): one module per entry point, `spirv/<file>.<entry>.spv`.
    #[arg(long)]
    pub spirv: bool,
    /// Also Metal Shading Language: `msl/<file>.<entry>.metal`.
    #[arg(long)]
    pub msl: bool,
    /// Also HLSL (DX12): `hlsl/<file>.<entry>.hlsl`.
    #[arg(long)]
    pub hlsl: bool,
}

pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let write = |path: PathBuf, bytes: &[u8]| -> anyhow::Result<()> {
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    super::output::ensure_dir(&args.out, "--out")?;
    let sources = shaders::variants();
    let mut written = 0;
    for (name, source) in &sources {
        write(args.out.join(name), source.as_bytes())?;
        written += 1;
    }
    let targets = [
        (args.spirv, translate::Target::SpirV, "spirv"),
        (args.msl, translate::Target::Msl, "msl"),
        (args.hlsl, translate::Target::Hlsl, "hlsl"),
    ];
    for (_, target, dir) in targets.into_iter().filter(|(wanted, _, _)| *wanted) {
        let dir = args.out.join(dir);
        super::output::ensure_dir(&dir, "--out")?;
        for (name, source) in &sources {
            let stem = name.trim_end_matches(".wgsl");
            for (entry, bytes) in translate::entry_points(name, source, target)? {
                write(dir.join(format!("{stem}.{entry}.{}", target.extension())), &bytes)?;
                written += 1;
            }
        }
    }
    println!(
        "wrote {written} files to {} (translations take each override, the workgroup size, at its WGSL default)",
        args.out.display()
    );
    Ok(())
}
