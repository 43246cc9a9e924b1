//! The crate's front page is README.md (src/lib.rs includes it). Its links to the guides in docs/
//! are relative, which works in a checkout but not on rustdoc's page, so src/lib.rs defines each
//! of them again, first, pointing at the file on docs.rs. This checks the two lists agree.

use std::collections::BTreeSet;

fn definitions(text: &str, prefix: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| l.strip_prefix('['))
        .filter_map(|l| l.split_once("]: "))
        .filter(|(name, _)| name.starts_with("docs/"))
        .map(|(name, _)| name.to_string())
        .collect()
}

#[test]
fn every_guide_link_of_the_readme_has_its_front_page_target() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let lib = std::fs::read_to_string(format!("{root}/src/lib.rs")).unwrap();
    let relative = definitions(&readme, "");
    let front_page = definitions(&lib, "#![doc = concat!(\"");
    assert!(!relative.is_empty());
    assert_eq!(
        relative, front_page,
        "README.md and src/lib.rs define different guide links"
    );
    // No inline link into docs/: it could not be redirected on the front page.
    assert!(
        !readme.contains("](docs/"),
        "use a reference link [docs/...] in README.md"
    );
    for name in &relative {
        let file = name.split('#').next().unwrap();
        assert!(
            std::path::Path::new(&format!("{root}/{file}")).is_file(),
            "{file} is linked from README.md but does not exist"
        );
    }
}
