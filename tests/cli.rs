//! The `vqgrad` binary: exit codes and output formats.

use std::process::Command;

fn vqgrad(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vqgrad")).args(args).output().expect("the binary runs")
}

fn require_gpu() -> bool {
    std::env::var("VQGRAD_REQUIRE_GPU").as_deref() == Ok("1")
}

#[test]
fn info_json_is_one_object_naming_the_adapters() {
    let out = vqgrad(&["info", "--json"]);
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert!(v["adapters"].is_array());
    assert!(v["version"].is_string());
    if v["chosen"].is_null() {
        assert!(!require_gpu(), "VQGRAD_REQUIRE_GPU=1 but no adapter was chosen: {}", v["error"]);
        assert_eq!(v["engine"], "cpu");
        eprintln!("SKIPPED the adapter checks: no adapter ({})", v["error"]);
        return;
    }
    let chosen = &v["chosen"];
    for key in ["name", "backend", "device_type", "driver", "limits", "features"] {
        assert!(!chosen[key].is_null(), "chosen.{key} missing");
    }
    assert!(chosen["limits"]["max_compute_workgroup_storage_size"].as_u64().unwrap() >= 16384);
    assert!(chosen["limits"]["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
    assert_eq!(v["engine"], "gpu");
}

#[test]
fn info_text_lists_the_limits() {
    let out = vqgrad(&["info"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("adapters ("), "{text}");
    if text.contains("chosen: none") {
        assert!(!require_gpu(), "VQGRAD_REQUIRE_GPU=1 but no adapter: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("CPU reference engine"));
    } else {
        assert!(text.contains("max_storage_buffer_binding_size"), "{text}");
    }
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    for args in [&["info", "--backend", "cuda"][..], &["frobnicate"][..], &[][..], &["info", "--nope"][..]] {
        let out = vqgrad(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error") || err.contains("Usage"), "{args:?}: {err}");
    }
    let out = vqgrad(&["info", "--backend", "cuda"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("vulkan, metal, dx12, gl"));
}

#[test]
fn an_adapter_filter_that_matches_nothing_falls_back_to_the_cpu_engine() {
    let out = vqgrad(&["info", "--json", "--adapter", "no such adapter 1234"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["chosen"].is_null());
    assert_eq!(v["engine"], "cpu");
    assert!(v["error"].as_str().unwrap().contains("no such adapter 1234"));
}

#[test]
fn help_and_version_exit_0() {
    assert!(vqgrad(&["--help"]).status.success());
    let out = vqgrad(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}
