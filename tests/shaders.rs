//! Every WGSL file parses and validates with naga using only the capabilities vqgrad needs, and translates to
//! SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL ES 3.10 compute (GL), entry point by entry point, so that
//! "any Vulkan, Metal or DX12 GPU" is checked on every run, without a GPU.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use std::collections::HashMap;
use vqgrad::shaders::{self, Lanes};

/// The entry points each file must have: a renamed or dropped kernel fails here.
const ENTRY_POINTS: &[(&str, &[&str])] = &[
    ("assign.wgsl", &["assign"]),
    ("estimator.wgsl", &["estimator_backward"]),
    (
        "codebook.wgsl",
        &[
            "clear_counts",
            "count_codes",
            "segment_sums",
            "segment_sums_small",
            "ema_sizes",
            "ema_codebook",
            "lloyd_update",
            "mark_used",
            "reset_dead",
        ],
    ),
    ("stats.wgsl", &["clear_label_counts", "count_labels", "summarize"]),
    ("dense.wgsl", &["matmul", "column_sums", "relu_mask"]),
    ("loss.wgsl", &["rec_grad", "sum_sq_diff", "sum"]),
    ("adam.wgsl", &["adam"]),
    ("gather.wgsl", &["gather_rows", "gather_codes"]),
];

/// Every source the crate compiles: each file in `shaders/` plus the scalar `assign` and `gather` variants.
fn sources() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        shaders::ALL.iter().map(|(name, src)| (name.to_string(), src.to_string())).collect();
    out.push(("assign.wgsl (scalar)".into(), shaders::assign_source(Lanes::Scalar)));
    out.push(("gather.wgsl (scalar)".into(), shaders::gather_source(Lanes::Scalar)));
    out
}

fn parse_and_validate(name: &str, src: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name} does not parse:\n{}", e.emit_to_string(src)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name} does not validate:\n{}", e.emit_to_string(src)));
    (module, info)
}

#[test]
fn shaders_dir_matches_the_constants() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = shaders::ALL.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every file in shaders/ must be in vqgrad::shaders::ALL");
    for (name, src) in shaders::ALL {
        assert_eq!(&std::fs::read_to_string(dir.join(name)).unwrap(), src);
    }
}

#[test]
fn scalar_variants_differ_only_in_the_variant_block() {
    for (scalar, vec4, file) in [
        (shaders::assign_source(Lanes::Scalar), shaders::assign_source(Lanes::Vec4), shaders::ASSIGN),
        (shaders::gather_source(Lanes::Scalar), shaders::gather_source(Lanes::Vec4), shaders::GATHER),
    ] {
        assert!(scalar.contains("alias Row = f32;"));
        assert!(!scalar.contains("vec4<f32>"), "the scalar variant must not load vec4");
        assert_eq!(vec4, file);
        let after = |s: &str| s[s.find("// VARIANT END").unwrap()..].to_string();
        assert_eq!(after(&scalar), after(file), "only the variant block may differ");
    }
    assert_eq!(Lanes::for_dim(8), Lanes::Vec4);
    assert_eq!(Lanes::for_dim(6), Lanes::Scalar);
}

#[test]
fn every_shader_validates_and_translates_to_every_backend() {
    let entry_points: HashMap<&str, &[&str]> = ENTRY_POINTS.iter().copied().collect();
    let mut translated = 0;
    for (name, src) in sources() {
        let (module, info) = parse_and_validate(&name, &src);
        let file = name.split(' ').next().unwrap();
        let expected = entry_points.get(file).unwrap_or_else(|| panic!("{file}: no expected entry points listed"));
        let found: Vec<&str> = module.entry_points.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(&found, expected, "{name}: entry points");

        for ep in &module.entry_points {
            assert_eq!(ep.stage, naga::ShaderStage::Compute, "{name}: {} is not a compute entry point", ep.name);
            let stage_ep = Some((ep.stage, ep.name.as_str()));
            // Overrides take their defaults, as a pipeline that sets no constants would.
            let (module, info) =
                naga::back::pipeline_constants::process_overrides(&module, &info, stage_ep, &Default::default())
                    .unwrap_or_else(|e| panic!("{name}::{}: overrides: {e}", ep.name));
            let ctx = format!("{name}::{}", ep.name);

            let spv_opts = spv::Options::default();
            let spv_pipe = spv::PipelineOptions { shader_stage: ep.stage, entry_point: ep.name.clone() };
            let words = spv::write_vec(&module, &info, &spv_opts, Some(&spv_pipe))
                .unwrap_or_else(|e| panic!("{ctx}: SPIR-V: {e}"));
            assert!(words.len() > 5 && words[0] == 0x0723_0203, "{ctx}: not a SPIR-V module");

            let msl_opts = msl::Options { fake_missing_bindings: true, ..Default::default() };
            let msl_pipe =
                msl::PipelineOptions { entry_point: Some((ep.stage, ep.name.clone())), ..Default::default() };
            let (msl_src, _) =
                msl::write_string(&module, &info, &msl_opts, &msl_pipe).unwrap_or_else(|e| panic!("{ctx}: MSL: {e}"));
            assert!(msl_src.contains("kernel"), "{ctx}: MSL has no kernel");

            let hlsl_opts = hlsl::Options { fake_missing_bindings: true, ..Default::default() };
            let hlsl_pipe = hlsl::PipelineOptions { entry_point: Some((ep.stage, ep.name.clone())) };
            let mut hlsl_src = String::new();
            hlsl::Writer::new(&mut hlsl_src, &hlsl_opts, &hlsl_pipe)
                .write(&module, &info, None)
                .unwrap_or_else(|e| panic!("{ctx}: HLSL: {e}"));
            assert!(hlsl_src.contains("[numthreads("), "{ctx}: HLSL has no compute entry point");

            let glsl_opts = glsl::Options::default(); // GLSL ES 3.10, the first with compute shaders
            let glsl_pipe =
                glsl::PipelineOptions { shader_stage: ep.stage, entry_point: ep.name.clone(), multiview: None };
            let mut glsl_src = String::new();
            glsl::Writer::new(&mut glsl_src, &module, &info, &glsl_opts, &glsl_pipe, Default::default())
                .and_then(|mut w| w.write())
                .unwrap_or_else(|e| panic!("{ctx}: GLSL ES: {e}"));
            assert!(glsl_src.contains("layout(local_size_x"), "{ctx}: GLSL has no compute layout");
            translated += 1;
        }
    }
    assert_eq!(translated, 26, "entry points translated");
}

#[test]
fn a_broken_shader_is_caught() {
    // The check above must be able to fail: a type error does not validate.
    let broken = shaders::ESTIMATOR.replace("let m = params.m;", "let m = params.m + 1.0;");
    let module = naga::front::wgsl::parse_str(&broken);
    let caught = match module {
        Err(_) => true,
        Ok(module) => Validator::new(ValidationFlags::all(), Capabilities::empty()).validate(&module).is_err(),
    };
    assert!(caught, "a u32 + f32 shader slipped through");
}
