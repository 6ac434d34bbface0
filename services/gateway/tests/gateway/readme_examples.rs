//! The README's "Gateway policies by example": every block is a config file
//! the gateway accepts.

use portico_common::config::{ServiceConfig as _, load_from};
use portico_gateway::{
    Config,
    config::{DEFAULTS, ENV_PREFIX},
};

/// The ```toml blocks of the README section `heading`.
fn toml_blocks(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let start = readme.find(heading).expect("the section exists");
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n### ").unwrap_or(section.len())];
    section
        .split("```toml\n")
        .skip(1)
        .map(|block| block[..block.find("```").expect("closed block")].to_owned())
        .collect()
}

#[test]
fn every_policy_example_in_the_readme_is_a_valid_config() {
    let blocks = toml_blocks("### Gateway policies by example");
    assert_eq!(blocks.len(), 5, "the section's examples were found");
    let dir = tempfile::tempdir().unwrap();
    for (n, block) in blocks.iter().enumerate() {
        let file = dir.path().join(format!("example-{n}.toml"));
        std::fs::write(&file, block).unwrap();
        let env = [(
            format!("{ENV_PREFIX}CONFIG_FILE"),
            file.display().to_string(),
        )];
        let config: Config = load_from(ENV_PREFIX, DEFAULTS, env)
            .unwrap_or_else(|err| panic!("example {n} does not load: {err}\n{block}"));
        if let Err(err) = config.validate() {
            panic!("example {n} is refused: {err}\n{block}");
        }
    }
}
