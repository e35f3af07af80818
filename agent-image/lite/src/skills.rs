//! Skills: markdown files in the volume's `skills/` folder (`skills/<name>.md` or, as OpenClaw
//! lays them out, `skills/<name>/SKILL.md`), loaded into the system prompt. Reloaded when the
//! folder changes, so a new skill needs no restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Most bytes of one skill, and of all skills together, put in the prompt.
const MAX_SKILL_BYTES: usize = 8_000;
const MAX_TOTAL_BYTES: usize = 24_000;

pub struct Skills {
    dir: PathBuf,
    cache: Mutex<(Option<SystemTime>, String)>,
}

impl Skills {
    pub fn new(data_dir: &Path) -> Self {
        Skills {
            dir: data_dir.join("skills"),
            cache: Mutex::new((None, String::new())),
        }
    }

    /// The skills section of the prompt (empty without skills).
    pub fn prompt(&self) -> String {
        let stamp = std::fs::metadata(&self.dir).and_then(|m| m.modified()).ok();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != stamp || stamp.is_none() {
            *cache = (stamp, self.load());
        }
        cache.1.clone()
    }

    fn load(&self) -> String {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return String::new();
        };
        let mut files: Vec<(String, PathBuf)> = rd
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                let name = p.file_stem()?.to_string_lossy().into_owned();
                if p.is_dir() {
                    Some((name, p.join("SKILL.md"))).filter(|(_, f)| f.is_file())
                } else {
                    p.extension()
                        .is_some_and(|x| x == "md")
                        .then_some((name, p))
                }
            })
            .collect();
        files.sort();
        let mut out = String::new();
        for (name, path) in files {
            let text = match std::fs::read(&path) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(t) => t,
                    Err(_) => {
                        tracing::warn!(path = %path.display(), "skill file is not valid UTF-8; skipped");
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read skill file; skipped");
                    continue;
                }
            };
            let text = text.trim();
            if text.len() > MAX_SKILL_BYTES {
                tracing::warn!(path = %path.display(), "skill file too long; skipped");
                continue;
            }
            if out.len() + text.len() > MAX_TOTAL_BYTES {
                tracing::warn!(path = %path.display(), "skills exceed the prompt budget; the rest are skipped");
                break;
            }
            out.push_str(&format!("\n## Skill: {name}\n{text}\n"));
        }
        out
    }
}
