//! Writes a directory as a seed image: `cargo run -p kiln-seedvol --example mkseed -- DIR OUT.iso
//! [OUT.img]` (the optional second output is the vfat variant). Dates come from
//! `SOURCE_DATE_EPOCH` (default 0).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_seedvol::{IsoOptions, Tree, VfatOptions, write_iso, write_vfat};

fn add(tree: &mut Tree, root: &Path, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
        let meta = e.metadata()?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            tree.add_dir(&rel, mode)?;
            add(tree, root, &path)?;
        } else {
            tree.add_file(&rel, fs::read(&path)?, mode)?;
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, iso, rest @ ..] = args.as_slice() else {
        return Err("usage: mkseed DIR OUT.iso [OUT.img]".into());
    };
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(0);
    let mut tree = Tree::new();
    add(&mut tree, Path::new(dir), Path::new(dir))?;
    let opts = IsoOptions {
        volume_id: "cidata".into(),
        epoch,
    };
    let n = write_iso(&tree, &opts, &mut fs::File::create(iso)?)?;
    eprintln!("{iso}: {n} bytes");
    if let Some(img) = rest.first() {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(img)?;
        let opts = VfatOptions {
            volume_label: "CIDATA".into(),
            epoch,
        };
        write_vfat(&tree, &opts, &mut f)?;
        eprintln!("{img}: {} bytes", f.metadata()?.len());
    }
    Ok(())
}
