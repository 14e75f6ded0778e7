//! Every option of the offline receivers is documented: the doc comments are the user docs
//! (`periscope components`).

use periscope_receivers::pcap::PcapConfig;
use periscope_receivers::synthetic::SyntheticConfig;

fn undocumented(schema: &schemars::Schema) -> Vec<String> {
    let root = schema.as_value();
    let mut missing = Vec::new();
    if root.get("description").is_none() {
        missing.push("(the component)".to_string());
    }
    let props = root.get("properties").and_then(|p| p.as_object());
    for (name, prop) in props.into_iter().flatten() {
        if prop.get("description").is_none() {
            missing.push(name.clone());
        }
    }
    missing
}

#[test]
fn every_option_is_documented() {
    let pcap = schemars::schema_for!(PcapConfig);
    let synthetic = schemars::schema_for!(SyntheticConfig);
    if std::env::var_os("SHOW_SCHEMAS").is_some() {
        eprintln!("{}", pcap.as_value());
        eprintln!("{}", synthetic.as_value());
    }
    assert_eq!(undocumented(&pcap), Vec::<String>::new());
    assert_eq!(undocumented(&synthetic), Vec::<String>::new());
}
