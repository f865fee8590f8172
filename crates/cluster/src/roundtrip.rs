//! Property tests: the cluster's outputs a provisioner reads back — `inventory.json` and the JSON report — read
//! back to an equal value from JSON and from YAML.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{
    DiskRecord, FileKind, FileReport, GoldenRecord, Inventory, Leftover, NodeInfo, NodeRecord,
    Report, Role, SeedRecord, Status,
};
use kiln_nocloud::MacAddr;
use proptest::prelude::*;

fn sha() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}"
}

fn kind() -> impl Strategy<Value = FileKind> {
    prop_oneof![
        Just(FileKind::Disk),
        Just(FileKind::Seed),
        Just(FileKind::Inventory)
    ]
}

prop_compose! {
    fn node()(
        name in "[a-z][a-z0-9-]{0,10}[a-z0-9]",
        server in any::<bool>(),
        ipv4 in any::<u32>(),
        ipv6 in prop::option::of(any::<u128>()),
        mac in prop::option::of(any::<[u8; 6]>()),
        id in "[0-9a-f]{16}",
        size in any::<u64>(),
        seed_sha in sha(),
    ) -> NodeRecord {
        NodeRecord {
            info: NodeInfo {
                instance_id: format!("{name}-{id}"),
                role: if server { Role::Server } else { Role::Agent },
                ipv4: Ipv4Addr::from(ipv4),
                ipv6: ipv6.map(Ipv6Addr::from),
                mac: mac.map(MacAddr),
                name: name.clone(),
            },
            disk: DiskRecord { path: format!("{name}.qcow2"), virtual_size: size },
            seed: SeedRecord { path: format!("{name}-seed.iso"), sha256: seed_sha, partition: None },
        }
    }
}

prop_compose! {
    fn inventory()(
        cluster in "[a-z][a-z0-9-]{0,10}",
        golden in "[a-z./-]{1,20}",
        golden_sha in sha(),
        size in any::<u64>(),
        nodes in prop::collection::vec(node(), 0..5),
    ) -> Inventory {
        Inventory {
            kiln_inventory: Inventory::VERSION,
            cluster,
            golden: GoldenRecord { path: golden, sha256: golden_sha, virtual_size: size },
            nodes,
        }
    }
}

prop_compose! {
    fn report()(
        inventory in inventory(),
        out_dir in "[a-z/]{1,20}",
        files in prop::collection::vec(
            ("[a-z.-]{1,12}", kind(), prop::option::of("[a-z]{1,8}"),
             prop_oneof![Just(Status::Created), Just(Status::Updated), Just(Status::Unchanged)]),
            0..6),
        leftovers in prop::collection::vec(("[a-z.-]{1,12}", kind(), prop::option::of("[a-z]{1,8}")), 0..3),
    ) -> Report {
        Report {
            out_dir: out_dir.into(),
            inventory,
            files: files.into_iter().map(|(path, kind, node, status)| FileReport { path, kind, node, status }).collect(),
            leftovers: leftovers.into_iter().map(|(path, kind, node)| Leftover { path, kind, node }).collect(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn inventory_round_trips(inv in inventory()) {
        let bytes = inv.to_bytes().expect("inventory bytes");
        let back: Inventory = serde_json::from_slice(&bytes).expect("from json");
        prop_assert_eq!(&back, &inv);
        let yaml = serde_saphyr::to_string(&inv).expect("to yaml");
        let back: Inventory = serde_saphyr::from_str(&yaml).expect("from yaml");
        prop_assert_eq!(&back, &inv, "{}", yaml);
    }

    #[test]
    fn report_round_trips(r in report()) {
        let json = serde_json::to_string(&r).expect("to json");
        let back: Report = serde_json::from_str(&json).expect("from json");
        prop_assert_eq!(&back, &r);
        let yaml = serde_saphyr::to_string(&r).expect("to yaml");
        let back: Report = serde_saphyr::from_str(&yaml).expect("from yaml");
        prop_assert_eq!(&back, &r, "{}", yaml);
    }
}
