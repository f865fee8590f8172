//! `inventory.json`: what a cluster directory holds, for provisioners and for the next run.
//!
//! Every path is relative to the cluster directory; nodes are in spec order; nothing comes from the
//! clock. The token is never part of it (only the seed's sha256 is).

use serde::{Deserialize, Serialize};

use std::net::{Ipv4Addr, Ipv6Addr};

use kiln_nocloud::{MacAddr, Role};

/// The inventory's file name inside the cluster directory.
pub const INVENTORY_FILE: &str = "inventory.json";

/// The whole inventory.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Format version of this file.
    pub kiln_inventory: u32,
    /// The cluster's name (`cluster.name`).
    pub cluster: String,
    /// The golden image every overlay is backed by.
    pub golden: GoldenRecord,
    /// The nodes, in spec order.
    pub nodes: Vec<NodeRecord>,
}

/// The golden image every overlay is backed by.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldenRecord {
    /// Relative to the cluster directory (the name stored in every overlay).
    pub path: String,
    /// sha256 of the golden image file (lower-case hex); a change makes existing overlays stale.
    pub sha256: String,
    /// Virtual size of the golden image in bytes.
    pub virtual_size: u64,
}

/// Who a node is: what a provisioner needs to attach its disk, seed and NIC.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// Server or agent.
    pub role: Role,
    /// Its static IPv4 address.
    pub ipv4: Ipv4Addr,
    /// Its static IPv6 address, if the network has IPv6.
    pub ipv6: Option<Ipv6Addr>,
    /// Written lowercase, colon-separated.
    pub mac: Option<MacAddr>,
    /// The seed's instance-id (changes whenever the node's documents do).
    pub instance_id: String,
}

/// One node.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Who the node is (flattened into the record's JSON object).
    #[serde(flatten)]
    pub info: NodeInfo,
    /// Its overlay.
    pub disk: DiskRecord,
    /// Its seed ISO.
    pub seed: SeedRecord,
}

/// A node's overlay.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRecord {
    /// Relative to the cluster directory.
    pub path: String,
    /// Virtual size in bytes.
    pub virtual_size: u64,
}

/// A node's seed: its ISO, or for `boot: sd_card` the FAT partition of its image.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedRecord {
    /// Relative to the cluster directory: the ISO, or the SD-card image holding the seed.
    pub path: String,
    /// sha256 of the ISO file; for an SD-card image, of the seed's files (each file's name, a NUL,
    /// its length as 8 little-endian bytes and its bytes, in the order `meta-data`,
    /// `network-config`, `user-data`, `vendor-data`). It changes with the token, which the
    /// inventory never holds.
    pub sha256: String,
    /// The FAT label of the partition inside `path` holding the seed (`system-boot`), for an
    /// SD-card image; absent for an ISO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
}

impl Inventory {
    /// The `kiln_inventory` format version this kiln writes.
    pub const VERSION: u32 = 1;

    /// Pretty JSON with a trailing newline.
    pub fn to_bytes(&self) -> Result<Vec<u8>, crate::Error> {
        let mut v =
            serde_json::to_vec_pretty(self).map_err(|e| crate::Error::SerializeInventory {
                message: e.to_string(),
            })?;
        v.push(b'\n');
        Ok(v)
    }

    /// The golden sha256 an existing inventory records, if it can be read at all (a damaged or
    /// foreign file records nothing, which makes existing overlays stale).
    pub fn recorded_golden_sha256(bytes: &[u8]) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        v.get("golden")?.get("sha256")?.as_str().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_pretty_with_newline_and_recorded_sha() {
        let inv = Inventory {
            kiln_inventory: Inventory::VERSION,
            cluster: "lab".into(),
            golden: GoldenRecord {
                path: "../golden.qcow2".into(),
                sha256: "ab".repeat(32),
                virtual_size: 1 << 30,
            },
            nodes: vec![NodeRecord {
                info: NodeInfo {
                    name: "cp".into(),
                    role: Role::Server,
                    ipv4: Ipv4Addr::new(10, 0, 0, 2),
                    ipv6: None,
                    mac: Some("52:54:00:00:00:10".parse().expect("mac")),
                    instance_id: "cp-0011223344556677".into(),
                },
                disk: DiskRecord {
                    path: "cp.qcow2".into(),
                    virtual_size: 1 << 30,
                },
                seed: SeedRecord {
                    path: "cp-seed.iso".into(),
                    sha256: "cd".repeat(32),
                    partition: None,
                },
            }],
        };
        let bytes = inv.to_bytes().expect("serialize");
        assert!(bytes.ends_with(b"}\n"));
        assert!(bytes.starts_with(b"{\n  \"kiln_inventory\": 1,"));
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(
            text.contains("\n      \"name\": \"cp\",\n      \"role\": \"server\","),
            "{text}"
        );
        let back: Inventory = serde_json::from_slice(&bytes).expect("parse");
        assert_eq!(back, inv);
        assert_eq!(
            Inventory::recorded_golden_sha256(&bytes),
            Some("ab".repeat(32))
        );
        assert_eq!(Inventory::recorded_golden_sha256(b"not json"), None);
        assert_eq!(Inventory::recorded_golden_sha256(b"{\"golden\":{}}"), None);
    }
}
