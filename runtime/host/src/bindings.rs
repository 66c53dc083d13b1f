//! The one place that runs `wasmtime::component::bindgen!` for the sink
//! world. Record types come from [`kubesink_normalize::record`].
//!
//! Also which version of the WIT package `kubesink:sink` a component was
//! built against ([`contract_versions`]), so that a sink built against a
//! version this host does not serve is refused at load with an error
//! saying so (wit/README.md, "Versions").

wasmtime::component::bindgen!({
    path: "../../wit",
    // The widest world: `sink-world` and every capability (`kafka`), so
    // one set of bindings serves components of every world.
    world: "kafka-sink-world",
    imports: { default: async | trappable },
    exports: { default: async },
    // `value`, `statement` and `sql-error` compare in tests and callers.
    additional_derives: [PartialEq],
    with: {
        "kubesink:sink/types": kubesink_normalize::record::kubesink::sink::types,
        "kubesink:sink/sql.connection": crate::sql::Connection,
    },
});

/// The generated names for the widest world; a sink exports the same
/// `sink` interface whichever world it was built against.
pub(crate) use self::{KafkaSinkWorld as SinkWorld, KafkaSinkWorldPre as SinkWorldPre};

/// The version of `kubesink:sink` this host implements.
pub(crate) const CONTRACT_VERSION: &str = "0.2.4";

/// The package, as import and export names start.
const PACKAGE: &str = "kubesink:sink/";

/// The optional export `kubesink:sink/packed` (since 0.2.2), before `@`.
const PACKED: &str = "kubesink:sink/packed";

/// Its function taking layout 1 (since 0.2.2).
pub(crate) const WRITE_PACKED: &str = "write-packed";

/// Its function taking layout 2 (since 0.2.3).
pub(crate) const WRITE_PACKED_V2: &str = "write-packed-v2";

/// A component's packed export: the function the host calls and the
/// layout it takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PackedExport {
    pub(crate) index: wasmtime::component::ComponentExportIndex,
    pub(crate) layout: crate::packed::Layout,
}

impl PackedExport {
    /// The function's name in `kubesink:sink/packed`.
    pub(crate) fn name(&self) -> &'static str {
        match self.layout {
            crate::packed::Layout::V1 => WRITE_PACKED,
            crate::packed::Layout::V2 => WRITE_PACKED_V2,
        }
    }
}

/// The component's `write-packed-v2`, or else its `write-packed`, when it
/// exports `kubesink:sink/packed` at a version this host serves: the host
/// then hands it batches as one buffer in that function's layout
/// ([`crate::packed`]). `None` for a component without it, which gets
/// `sink.write`. The function's type is checked when an instance is built.
pub(crate) fn packed_export(
    component: &wasmtime::component::Component,
    engine: &wasmtime::Engine,
) -> Option<PackedExport> {
    let ty = component.component_type();
    let name = ty
        .exports(engine)
        .map(|(name, _)| name)
        .find(|name| {
            name.split_once('@')
                .is_some_and(|(base, version)| base == PACKED && is_served(version))
        })?
        .to_owned();
    let instance = component.get_export_index(None, &name)?;
    let found = |name: &str| component.get_export_index(Some(&instance), name);
    match found(WRITE_PACKED_V2) {
        Some(index) => Some(PackedExport {
            index,
            layout: crate::packed::Layout::V2,
        }),
        None => found(WRITE_PACKED).map(|index| PackedExport {
            index,
            layout: crate::packed::Layout::V1,
        }),
    }
}

/// The versions of `kubesink:sink` the component's imports and exports
/// name (e.g. `kubesink:sink/sink@0.1.0` gives `0.1.0`), sorted, without
/// repeats; `""` for a name without a version.
pub(crate) fn contract_versions(
    component: &wasmtime::component::Component,
    engine: &wasmtime::Engine,
) -> Vec<String> {
    let ty = component.component_type();
    let mut versions: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name))
        .filter_map(|name| name.strip_prefix(PACKAGE))
        .map(|rest| rest.split_once('@').map_or("", |(_, v)| v).to_owned())
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

/// Whether a component built against `version` of `kubesink:sink` links
/// with this host: the same major version, or for 0.x the same minor
/// (semver, as wasmtime's linker matches names: 0.2.1 serves 0.2.0).
pub(crate) fn is_served(version: &str) -> bool {
    let key = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(if major == 0 { (0, minor) } else { (major, 0) })
    };
    key(version).is_some_and(|k| key(CONTRACT_VERSION) == Some(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_served_by_semver() {
        assert!(is_served("0.2.0"));
        assert!(is_served("0.2.1"));
        assert!(is_served("0.2.7"));
        assert!(!is_served("0.1.0"));
        assert!(!is_served("0.3.0"));
        assert!(!is_served("1.2.0"));
        assert!(!is_served(""));
        assert!(!is_served("x.y"));
    }
}
