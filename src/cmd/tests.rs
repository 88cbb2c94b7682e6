//! The environment variables the binary reads, against `docs/configuration.md`.

use std::collections::BTreeSet;

use clap::CommandFactory;

use super::Cli;

/// Every environment variable a flag of `command` or its subcommands reads.
fn flag_variables(command: &clap::Command, out: &mut BTreeSet<String>) {
    for arg in command.get_arguments() {
        if let Some(env) = arg.get_env() {
            out.insert(env.to_string_lossy().into_owned());
        }
    }
    for sub in command.get_subcommands() {
        flag_variables(sub, out);
    }
}

#[test]
fn every_environment_variable_is_in_the_configuration_reference() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let mut variables = BTreeSet::new();
    flag_variables(&Cli::command(), &mut variables);
    assert!(variables.contains("FEDGATE_CONFIG"), "{variables:?}");
    // Read outside clap: the log filter and colours, the build's commit.
    variables.extend(["RUST_LOG", "NO_COLOR", "FEDGATE_COMMIT"].map(String::from));
    let missing: Vec<&String> = variables
        .iter()
        .filter(|v| !doc.contains(&format!("| `{v}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md's environment table lacks {missing:?}"
    );
}
