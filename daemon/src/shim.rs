//! TEMPORARY stand-ins for the state directory and socket access types
//! being built on other branches; replaced at their merge.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Definition {
    pub uuid: Uuid,
    pub profile: String,
    pub gpu: Option<String>,
    pub auto: bool,
    pub socket_owner: Option<String>,
    pub socket_group: Option<String>,
    pub socket_mode: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("io {0}")]
    Io(#[from] std::io::Error),
    #[error("no definition")]
    NotFound,
    #[error("bad {0}")]
    Bad(String),
}

#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn open(path: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(path.join("vgpus"))?;
        Ok(Self { path: path.into() })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn path_of(&self, uuid: Uuid) -> PathBuf {
        self.path.join("vgpus").join(format!("{uuid}.toml"))
    }
    pub fn load(&self) -> Result<Vec<Definition>, StateError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.path.join("vgpus"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            let Some(u) = name
                .strip_suffix(".toml")
                .and_then(|u| Uuid::try_parse(u).ok())
            else {
                continue;
            };
            let text = std::fs::read_to_string(e.path())?;
            let v: toml::Table =
                toml::from_str(&text).map_err(|e| StateError::Bad(e.to_string()))?;
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
            out.push(Definition {
                uuid: u,
                profile: s("profile").unwrap_or_default(),
                gpu: s("gpu"),
                auto: v.get("auto").and_then(|x| x.as_bool()).unwrap_or(false),
                socket_owner: s("socket_owner"),
                socket_group: s("socket_group"),
                socket_mode: s("socket_mode"),
            });
        }
        out.sort_by_key(|d| d.uuid);
        Ok(out)
    }
    pub fn save(&self, d: &Definition) -> Result<(), StateError> {
        let mut t = toml::Table::new();
        t.insert("profile".into(), d.profile.clone().into());
        if let Some(g) = &d.gpu {
            t.insert("gpu".into(), g.clone().into());
        }
        t.insert("auto".into(), d.auto.into());
        for (k, v) in [
            ("socket_owner", &d.socket_owner),
            ("socket_group", &d.socket_group),
            ("socket_mode", &d.socket_mode),
        ] {
            if let Some(v) = v {
                t.insert(k.into(), v.clone().into());
            }
        }
        std::fs::write(self.path_of(d.uuid), toml::to_string(&t).unwrap())?;
        Ok(())
    }
    pub fn remove(&self, uuid: Uuid) -> Result<(), StateError> {
        std::fs::remove_file(self.path_of(uuid)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StateError::NotFound
            } else {
                e.into()
            }
        })
    }
}

