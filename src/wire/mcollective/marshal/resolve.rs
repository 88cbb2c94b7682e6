//! Resolving object links into a [`Ruby`] tree, bounded in how far the links may expand it.

use super::{Encoding, FIXNUM_RANGE, MAX_DEPTH, MAX_EXPANDED, Node, parse_float};
use crate::wire::mcollective::{LegacyError, Ruby};

/// What one object-table slot holds while the tree is resolved.
enum Slot {
    /// A container still being read: a link to it is a cycle.
    Open,
    Done(Ruby),
}

/// Resolves links by walking the tree in the order Ruby numbered its objects.
pub fn resolve(root: &Node) -> Result<Ruby, LegacyError> {
    let mut table = Vec::new();
    let mut weight = 0usize;
    resolve_node(root, &mut table, &mut weight, 0)
}

fn too_heavy() -> LegacyError {
    LegacyError::marshal(
        0,
        format!("more than {MAX_EXPANDED} bytes of values once links are expanded"),
    )
}

/// How deep containers nest in `value`: 0 for a scalar.
fn nesting(value: &Ruby) -> usize {
    match value {
        Ruby::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Ruby::Hash(pairs) => {
            1 + pairs
                .iter()
                .map(|(k, v)| nesting(k).max(nesting(v)))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// `node`, at `depth`, with its links expanded: no heavier than [`MAX_EXPANDED`] and no deeper
/// than [`MAX_DEPTH`] (a link to a deep container inside another must not nest past it, or the
/// value could not be written and read again).
fn resolve_node(
    node: &Node,
    table: &mut Vec<Slot>,
    weight: &mut usize,
    depth: usize,
) -> Result<Ruby, LegacyError> {
    *weight += 1 + match node {
        Node::Str(bytes, _) => bytes.len(),
        Node::Symbol(name) => name.len(),
        _ => 0,
    };
    if *weight > MAX_EXPANDED {
        return Err(too_heavy());
    }
    let value = match node {
        Node::Nil => Ruby::Nil,
        Node::True => Ruby::Bool(true),
        Node::False => Ruby::Bool(false),
        Node::Int(n) => {
            let value = Ruby::Int(*n);
            if !FIXNUM_RANGE.contains(n) {
                table.push(Slot::Done(value.clone()));
            }
            value
        }
        Node::Float(text) => {
            let value = Ruby::Float(parse_float(text)?);
            table.push(Slot::Done(value.clone()));
            value
        }
        Node::Str(bytes, encoding) => {
            let value = match encoding {
                Encoding::Binary => Ruby::Bytes(bytes.clone()),
                _ => match String::from_utf8(bytes.clone()) {
                    Ok(text) => Ruby::Str(text),
                    Err(_) => Ruby::Bytes(bytes.clone()),
                },
            };
            table.push(Slot::Done(value.clone()));
            if let Encoding::Named(name) = encoding {
                table.push(Slot::Done(Ruby::Str(name.clone())));
            }
            value
        }
        Node::Symbol(name) => Ruby::Symbol(name.clone()),
        Node::Array(items) => {
            let index = table.len();
            table.push(Slot::Open);
            let items = items
                .iter()
                .map(|item| resolve_node(item, table, weight, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            let value = Ruby::Array(items);
            table[index] = Slot::Done(value.clone());
            value
        }
        Node::Hash(pairs) => {
            let index = table.len();
            table.push(Slot::Open);
            let mut out = Vec::with_capacity(pairs.len());
            for (key, value) in pairs {
                let key = resolve_node(key, table, weight, depth + 1)?;
                let value = resolve_node(value, table, weight, depth + 1)?;
                out.push((key, value));
            }
            let value = Ruby::Hash(out);
            table[index] = Slot::Done(value.clone());
            value
        }
        Node::Link(index) => resolve_link(*index, table, weight, depth)?,
    };
    Ok(value)
}

/// The object a link at `depth` refers to, counted in `weight` and in its depth again.
fn resolve_link(
    index: usize,
    table: &[Slot],
    weight: &mut usize,
    depth: usize,
) -> Result<Ruby, LegacyError> {
    match table.get(index) {
        Some(Slot::Done(value)) => {
            *weight += value.weight();
            if *weight > MAX_EXPANDED {
                return Err(too_heavy());
            }
            if depth + nesting(value) > MAX_DEPTH {
                return Err(LegacyError::marshal(
                    0,
                    format!("nested deeper than {MAX_DEPTH} once links are expanded"),
                ));
            }
            Ok(value.clone())
        }
        Some(Slot::Open) => Err(LegacyError::marshal(
            0,
            format!("object link @{index} refers to a container that holds it"),
        )),
        None => Err(LegacyError::marshal(
            0,
            format!("object link @{index} refers to no object"),
        )),
    }
}
