//! The release archive's SBOM: a CycloneDX 1.5 JSON document of what the `tap` binary is built
//! from, computed from `cargo metadata --filter-platform <target>` (no tool to install).
//!
//! Its components are the normal-dependency closure of `tap-cli` in the resolve graph:
//! dev-dependencies and build-dependencies are not in the binary and are left out. `cargo
//! metadata` resolves features for the whole workspace, dev-dependencies included, so its closure
//! can hold a crate only another member's features pull in; the closure is therefore narrowed to
//! the packages `cargo tree -p tap-cli -e normal --target <target>` lists (features as the binary's
//! own build resolves them). Each component has its version,
//! its licence (the crate's SPDX expression), its package URL, its repository, and the SHA-256 of
//! the `.crate` file Cargo.lock pins.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A normal (not dev, not build) dependency edge of the resolve graph.
fn is_normal(dep: &Value) -> bool {
    dep["dep_kinds"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
}

/// The package ids of `root`'s normal-dependency closure, `root` included.
pub fn closure<'a>(metadata: &'a Value, root: &str) -> Result<BTreeSet<&'a str>> {
    let list = |v: &'a Value| v.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let members: BTreeSet<&str> = list(&metadata["workspace_members"]).iter().filter_map(Value::as_str).collect();
    let root_id = list(&metadata["packages"])
        .iter()
        .find(|p| p["name"] == root && p["id"].as_str().is_some_and(|id| members.contains(id)))
        .and_then(|p| p["id"].as_str())
        .with_context(|| format!("no workspace package {root} in cargo metadata"))?;
    let graph: BTreeMap<&str, Vec<&str>> = metadata["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata has no resolve graph")?
        .iter()
        .filter_map(|node| {
            let deps = node["deps"].as_array()?.iter().filter(|d| is_normal(d)).filter_map(|d| d["pkg"].as_str());
            Some((node["id"].as_str()?, deps.collect()))
        })
        .collect();
    let mut seen = BTreeSet::from([root_id]);
    let mut stack = vec![root_id];
    while let Some(at) = stack.pop() {
        for &next in graph.get(at).into_iter().flatten() {
            if seen.insert(next) {
                stack.push(next);
            }
        }
    }
    Ok(seen)
}

/// `name → SHA-256` of each registry package in Cargo.lock, keyed `name@version`.
fn lock_checksums(cargo_lock: &str) -> Result<BTreeMap<String, String>> {
    let lock: toml_edit::DocumentMut = cargo_lock.parse().context("parsing Cargo.lock")?;
    let mut sums = BTreeMap::new();
    if let Some(packages) = lock.get("package").and_then(|p| p.as_array_of_tables()) {
        for package in packages {
            let field = |key: &str| package.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            if let (Some(name), Some(version), Some(checksum)) = (field("name"), field("version"), field("checksum")) {
                sums.insert(format!("{name}@{version}"), checksum);
            }
        }
    }
    Ok(sums)
}

/// A crate's licence as an SPDX expression: the old `MIT/Apache-2.0` spelling means `OR`.
fn spdx(license: &str) -> String {
    license.split('/').map(str::trim).collect::<Vec<_>>().join(" OR ")
}

fn purl(package: &Value) -> String {
    format!(
        "pkg:cargo/{}@{}",
        package["name"].as_str().unwrap_or_default(),
        package["version"].as_str().unwrap_or_default()
    )
}

/// One package as a CycloneDX component (`type` library, or application for the root).
fn component(package: &Value, kind: &str, checksums: &BTreeMap<String, String>) -> Result<Value> {
    let name = package["name"].as_str().unwrap_or_default();
    let version = package["version"].as_str().unwrap_or_default();
    let licenses = match (package["license"].as_str(), package["license_file"].as_str()) {
        (Some(license), _) => json!([{"expression": spdx(license)}]),
        (None, Some(file)) => json!([{"license": {"name": format!("the crate's own licence file ({file})")}}]),
        (None, None) => bail!("{name} {version} declares no licence"),
    };
    let mut component = json!({
        "type": kind,
        "bom-ref": purl(package),
        "name": name,
        "version": version,
        "purl": purl(package),
        "licenses": licenses,
    });
    if let Some(description) = package["description"].as_str() {
        component["description"] = json!(description.trim());
    }
    if let Some(repository) = package["repository"].as_str() {
        component["externalReferences"] = json!([{"type": "vcs", "url": repository}]);
    }
    if let Some(sum) = checksums.get(&format!("{name}@{version}")) {
        component["hashes"] = json!([{"alg": "SHA-256", "content": sum}]);
    }
    Ok(component)
}

/// What the SBOM is of.
pub struct Subject<'a> {
    /// The workspace package that builds the binary (`tap-cli`).
    pub package: &'a str,
    /// The binary's name (`tap`).
    pub binary: &'a str,
    /// The target triple the metadata was filtered for.
    pub target: &'a str,
    /// Seconds since the epoch of the build's source (the commit's time).
    pub time: u64,
    /// The `name@version` of every package the binary's build compiles (`cargo tree`), when known.
    pub built: Option<&'a BTreeSet<String>>,
}

/// The CycloneDX document of `subject`, from `cargo metadata --filter-platform <target>` JSON
/// and the text of Cargo.lock.
pub fn cyclonedx(metadata: &Value, cargo_lock: &str, subject: &Subject) -> Result<Value> {
    let mut ids = closure(metadata, subject.package)?;
    let checksums = lock_checksums(cargo_lock)?;
    let empty = Vec::new();
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .filter(|(id, _)| ids.contains(id))
        .collect();
    let root = packages.values().copied().find(|p| p["name"] == subject.package).context("the root package")?;
    if let Some(built) = subject.built {
        let key = |p: &Value| {
            format!("{}@{}", p["name"].as_str().unwrap_or_default(), p["version"].as_str().unwrap_or_default())
        };
        ids.retain(|id| packages.get(id).is_some_and(|p| p["id"] == root["id"] || built.contains(&key(p))));
    }
    let packages: BTreeMap<&str, &Value> = packages.into_iter().filter(|(id, _)| ids.contains(id)).collect();

    let mut root_component = component(root, "application", &checksums)?;
    root_component["name"] = json!(subject.binary);
    let mut components: Vec<Value> = packages
        .values()
        .filter(|p| p["id"] != root["id"])
        .map(|p| component(p, "library", &checksums))
        .collect::<Result<_>>()?;
    components.sort_by(|a, b| a["bom-ref"].as_str().cmp(&b["bom-ref"].as_str()));

    let mut dependencies: Vec<Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|node| node["id"].as_str().is_some_and(|id| ids.contains(id)))
        .map(|node| {
            let mut on: Vec<String> = node["deps"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .filter(|d| is_normal(d))
                .filter_map(|d| packages.get(d["pkg"].as_str()?).map(|p| purl(p)))
                .collect();
            on.sort();
            on.dedup();
            let of = packages.get(node["id"].as_str().unwrap_or_default()).map(|p| purl(p)).unwrap_or_default();
            json!({"ref": of, "dependsOn": on})
        })
        .collect();
    dependencies.sort_by(|a, b| a["ref"].as_str().cmp(&b["ref"].as_str()));

    // A serial number derived from the content: the same sources give the same document.
    let digest = Sha256::digest(serde_json::to_vec(&(&root_component, &components, subject.target))?);
    let mut bytes: [u8; 16] = digest[..16].try_into()?;
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // RFC 9562 version 8 (custom)
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let serial = format!("urn:uuid:{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);

    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": crate::clock::timestamp(subject.time),
            "tools": {"components": [{"type": "application", "name": "xtask", "description": "cargo xtask dist"}]},
            "component": root_component,
            "properties": [{"name": "cdx:rust:target", "value": subject.target}],
        },
        "components": components,
        "dependencies": dependencies,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, deps: &[(&str, Option<&str>)]) -> Value {
        json!({"id": id, "deps": deps.iter().map(|(pkg, kind)| json!({"pkg": pkg, "dep_kinds": [{"kind": kind}]})).collect::<Vec<_>>()})
    }

    fn package(id: &str, name: &str, license: Option<&str>) -> Value {
        json!({"id": id, "name": name, "version": "1.0.0", "license": license, "license_file": null,
               "description": format!("{name} crate"), "repository": null, "source": null})
    }

    fn doctored() -> Value {
        json!({
            "workspace_members": ["app"],
            "packages": [package("app", "app-cli", Some("Apache-2.0")), package("lib", "lib", Some("MIT/Apache-2.0")),
                         package("deep", "deep", Some("MIT")), package("devonly", "devonly", Some("MIT")),
                         package("buildonly", "buildonly", Some("MIT"))],
            "resolve": {"nodes": [
                node("app", &[("lib", None), ("devonly", Some("dev")), ("buildonly", Some("build"))]),
                node("lib", &[("deep", None)]),
                node("deep", &[]), node("devonly", &[]), node("buildonly", &[]),
            ]},
        })
    }

    const LOCK: &str = "version = 4\n\n[[package]]\nname = \"deep\"\nversion = \"1.0.0\"\nsource = \"registry+x\"\nchecksum = \"abc123\"\n";

    #[test]
    fn the_closure_follows_normal_edges_only() {
        let metadata = doctored();
        let ids = closure(&metadata, "app-cli").unwrap();
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["app", "deep", "lib"]);
    }

    #[test]
    fn components_carry_version_licence_purl_and_lock_checksum() {
        let metadata = doctored();
        let subject =
            Subject { package: "app-cli", binary: "app", target: "x86_64-unknown-linux-gnu", time: 0, built: None };
        let bom = cyclonedx(&metadata, LOCK, &subject).unwrap();
        assert_eq!(bom["bomFormat"], "CycloneDX");
        assert_eq!(bom["metadata"]["component"]["name"], "app");
        assert_eq!(bom["metadata"]["timestamp"], "1970-01-01T00:00:00Z");
        let names: Vec<&str> =
            bom["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["deep", "lib"]);
        let lib = &bom["components"][1];
        assert_eq!(lib["licenses"][0]["expression"], "MIT OR Apache-2.0");
        assert_eq!(lib["purl"], "pkg:cargo/lib@1.0.0");
        assert_eq!(bom["components"][0]["hashes"][0]["content"], "abc123");
        let app_deps =
            bom["dependencies"].as_array().unwrap().iter().find(|d| d["ref"] == "pkg:cargo/app-cli@1.0.0").unwrap();
        assert_eq!(app_deps["dependsOn"], json!(["pkg:cargo/lib@1.0.0"]));
        assert_eq!(cyclonedx(&metadata, LOCK, &subject).unwrap()["serialNumber"], bom["serialNumber"], "reproducible");
    }

    #[test]
    fn the_closure_narrows_to_what_the_build_compiles() {
        let metadata = doctored();
        let built = BTreeSet::from(["lib@1.0.0".to_owned()]);
        let subject = Subject { package: "app-cli", binary: "app", target: "t", time: 0, built: Some(&built) };
        let bom = cyclonedx(&metadata, LOCK, &subject).unwrap();
        assert_eq!(bom["components"].as_array().unwrap().len(), 1);
        assert_eq!(bom["components"][0]["name"], "lib");
        let lib = bom["dependencies"].as_array().unwrap().iter().find(|d| d["ref"] == "pkg:cargo/lib@1.0.0").unwrap();
        assert_eq!(lib["dependsOn"], json!([]), "no edge to a package left out");
    }

    #[test]
    fn a_crate_without_any_licence_is_an_error() {
        let mut metadata = doctored();
        metadata["packages"][2]["license"] = Value::Null;
        let subject = Subject { package: "app-cli", binary: "app", target: "t", time: 0, built: None };
        let err = cyclonedx(&metadata, LOCK, &subject).unwrap_err().to_string();
        assert!(err.contains("deep 1.0.0 declares no licence"), "{err}");
    }
}
