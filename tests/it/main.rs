//! flowrun's integration tests, as one test binary (one link of the whole crate instead of one
//! per file). Each module is a suite; [`support`] is what they share: every test gets its own
//! database, cache and empty `TMPDIR`, and runs the real `flowrun` binary on real Python.

mod support;

mod agents;
mod cli_display;
mod cli_inspect;
mod cli_run;
mod codegen_script;
mod cost_limits;
mod escapes;
mod fail_fast;
mod faults;
mod history;
mod http_command_nodes;
mod httpbin;
mod llm_nodes;
mod orchestration;
mod page_browser;
mod pause_limits;
mod protocol;
mod python_env;
mod run_core;
mod runtime_unittest;
mod sched_slice;
mod script_cache;
mod secret_forms;
mod secrets;
mod serve;
mod serve_editor;
mod serve_limits;
mod serve_logs;
mod serve_page;
mod serve_security;
mod serve_slow_clients;
mod serve_stream;
mod shell;
mod shepherd_binary;
mod store_wal;
mod subworkflows;
mod validate_code;
mod validate_errors;
mod warm;
mod warm_attacks;
mod warm_memory;
mod warm_ready;
mod warm_settings;
mod warm_spare;
mod workflow_files;
mod workflow_tests;
mod workflow_tests_ci;
mod workflow_tests_failures;
mod workflow_tests_invalid;
mod workflow_tests_jobs;
mod workflow_tests_record;
mod workflow_tests_setup;
