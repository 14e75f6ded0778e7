//! Every option of the offline receivers is documented: the doc comments are the user docs
//! (`periscope components`).

use periscope_receivers::pcap::PcapConfig;
use periscope_receivers::synthetic::SyntheticConfig;
use periscope_testkit::component::undocumented;

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
