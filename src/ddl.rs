//! Choria JSON agent DDLs: a directory loaded into a [`DdlSet`], and a pure check of one call's
//! inputs with go-choria's semantics, so that what a Choria server refuses is refused first.

mod goregex;
mod schema;
pub mod validate;

pub use goregex::MAX_REGEX_BYTES;
pub use schema::SchemaError;
pub use validate::{InputSpec, InputType, Problem, Validation};

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Largest DDL file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most DDL files one directory may hold.
pub const MAX_FILES: usize = 1024;
/// Most actions one agent may declare.
pub const MAX_ACTIONS: usize = 256;
/// Most inputs one action may declare.
pub const MAX_INPUTS: usize = 256;
/// The agent that has no DDL and no inputs; every check passes it.
pub const DISCOVERY: &str = "discovery";
/// The suffix of JSON DDL files.
const SUFFIX: &str = ".json";

/// What [`DdlSet::check`] does with an agent that has no DDL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownAgents {
    /// Refuse it with `unknown_agent` (the gateway, where a DDL directory is configured).
    Refuse,
    /// Let it pass unchecked (a server whose agent brings no DDL).
    Pass,
}

/// One agent's DDL, ready to check calls.
#[derive(Clone, Debug)]
pub struct AgentDdl {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.timeout`; 0 when absent (go-choria then uses 10 s).
    pub timeout_seconds: u64,
    /// The actions by name.
    pub actions: BTreeMap<String, ActionDdl>,
}

/// One action's declared inputs.
#[derive(Clone, Debug)]
pub struct ActionDdl {
    /// The inputs by name.
    pub inputs: BTreeMap<String, InputSpec>,
}

/// Why a call does not match its agent's DDL; [`InputError::code`] is stable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// No DDL is loaded for the agent.
    #[error("agent {agent} has no DDL")]
    UnknownAgent {
        /// The agent.
        agent: String,
    },
    /// The agent's DDL does not declare the action.
    #[error("action {action} is not declared in the DDL of agent {agent}")]
    UnknownAction {
        /// The agent.
        agent: String,
        /// The action.
        action: String,
    },
    /// An input is missing, undeclared, of the wrong type, or fails its validation.
    #[error("{agent}#{action}: input '{input}' {problem}")]
    InvalidInput {
        /// The agent.
        agent: String,
        /// The action.
        action: String,
        /// The input.
        input: String,
        /// Why.
        problem: Problem,
    },
}

impl InputError {
    /// The stable code: `unknown_agent`, `unknown_action` or `invalid_input`.
    pub fn code(&self) -> &'static str {
        match self {
            InputError::UnknownAgent { .. } => "unknown_agent",
            InputError::UnknownAction { .. } => "unknown_action",
            InputError::InvalidInput { .. } => "invalid_input",
        }
    }

    /// The input at fault, when one is.
    pub fn input(&self) -> Option<&str> {
        match self {
            InputError::InvalidInput { input, .. } => Some(input),
            _ => None,
        }
    }

    /// The reason in go-choria's words (`input 'service' is required`, `validation failed for
    /// input 'service': …`), for replies that mimic a Choria server.
    pub fn choria_reason(&self) -> String {
        match self {
            InputError::InvalidInput { input, problem, .. } => problem.choria_sentence(input),
            InputError::UnknownAction { agent, action } => {
                format!("unknown action {agent}#{action}")
            }
            InputError::UnknownAgent { agent } => format!("Cannot find DDL for agent {agent}"),
        }
    }
}

impl AgentDdl {
    /// Parses one JSON DDL document.
    pub fn parse(text: &str) -> Result<AgentDdl, SchemaError> {
        schema::parse(text)
    }

    /// Checks a call of `action` with `data` against this agent's DDL.
    pub fn check(&self, action: &str, data: &Map<String, Value>) -> Result<(), InputError> {
        let Some(declared) = self.actions.get(action) else {
            return Err(InputError::UnknownAction {
                agent: self.name.clone(),
                action: action.to_string(),
            });
        };
        validate::check_inputs(&declared.inputs, data).map_err(|(input, problem)| {
            InputError::InvalidInput {
                agent: self.name.clone(),
                action: action.to_string(),
                input,
                problem,
            }
        })
    }
}

/// Why a DDL directory could not be loaded; every variant names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum DdlError {
    /// A file or the directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not a valid DDL.
    #[error("{path}: {source}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// Where in the document, and what.
        source: SchemaError,
    },
    /// A file's `metadata.name` is not its file name.
    #[error("{path}: metadata.name is {name:?}, the file must be named {name}.json")]
    Name {
        /// The file.
        path: PathBuf,
        /// The declared name.
        name: String,
    },
    /// A file or the directory is over a limit.
    #[error("{path}: {message}")]
    Limit {
        /// The file or directory.
        path: PathBuf,
        /// Which limit.
        message: String,
    },
}

/// Every agent DDL of a directory, keyed by agent name.
#[derive(Clone, Debug)]
pub struct DdlSet {
    agents: HashMap<String, AgentDdl>,
    unknown: UnknownAgents,
}

impl DdlSet {
    /// An empty set.
    pub fn new(unknown: UnknownAgents) -> DdlSet {
        DdlSet {
            agents: HashMap::new(),
            unknown,
        }
    }

    /// Loads every `*.json` file of `dir` (not its subdirectories); other files are skipped.
    pub fn load(dir: &Path, unknown: UnknownAgents) -> Result<DdlSet, DdlError> {
        let mut set = DdlSet::new(unknown);
        for (stem, path) in ddl_files(dir)? {
            let text = read_bounded(&path)?;
            let agent = AgentDdl::parse(&text).map_err(|source| DdlError::Schema {
                path: path.clone(),
                source,
            })?;
            if agent.name != stem {
                return Err(DdlError::Name {
                    path,
                    name: agent.name,
                });
            }
            warn_unsupported(&path, &agent);
            set.insert(agent);
        }
        Ok(set)
    }

    /// Adds or replaces an agent's DDL.
    pub fn insert(&mut self, agent: AgentDdl) {
        self.agents.insert(agent.name.clone(), agent);
    }

    /// The DDL of `agent`, if loaded.
    pub fn agent(&self, agent: &str) -> Option<&AgentDdl> {
        self.agents.get(agent)
    }

    /// Names of the loaded agents, sorted.
    pub fn agents(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.agents.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Checks one call. `discovery` always passes; an agent without a DDL passes or is
    /// refused as the set was built to do.
    pub fn check(
        &self,
        agent: &str,
        action: &str,
        data: &Map<String, Value>,
    ) -> Result<(), InputError> {
        if agent == DISCOVERY {
            return Ok(());
        }
        match (self.agents.get(agent), self.unknown) {
            (Some(ddl), _) => ddl.check(action, data),
            (None, UnknownAgents::Pass) => Ok(()),
            (None, UnknownAgents::Refuse) => Err(InputError::UnknownAgent {
                agent: agent.to_string(),
            }),
        }
    }
}

/// The `*.json` files of `dir` with their stems, sorted, at most [`MAX_FILES`].
fn ddl_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, DdlError> {
    let io = |source| DdlError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(SUFFIX))
        else {
            continue;
        };
        if stem.is_empty() || stem.starts_with('.') || !path.is_file() {
            continue;
        }
        files.push((stem.to_string(), path.clone()));
        if files.len() > MAX_FILES {
            return Err(DdlError::Limit {
                path: dir.to_path_buf(),
                message: format!("more than {MAX_FILES} DDL files"),
            });
        }
    }
    files.sort();
    Ok(files)
}

/// Reads a file of at most [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<String, DdlError> {
    let io = |source| DdlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(DdlError::Limit {
            path: path.to_path_buf(),
            message: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    Ok(text)
}

/// Logs what go-choria would only warn about, or refuse on every call.
fn warn_unsupported(path: &Path, agent: &AgentDdl) {
    for (action, declared) in &agent.actions {
        for (input, spec) in &declared.inputs {
            if let Validation::Unsupported(name) = &spec.validation {
                tracing::warn!(file = %path.display(), %action, %input, validator = %name, "unsupported validator: Choria does not check it, nor does fedgate");
            }
            if let InputType::Unsupported(kind) = &spec.kind {
                tracing::warn!(file = %path.display(), %action, %input, %kind, "unsupported input type: Choria refuses every value, so does fedgate");
            }
        }
    }
}

#[cfg(test)]
mod tests;
