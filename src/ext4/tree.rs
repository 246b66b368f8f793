//! The in-memory file tree and OCI layer semantics: replacing, merging,
//! whiteouts, opaque directories and hard links. No I/O: file data is
//! already on disk and a file here only holds its extents; extents of
//! files that disappear are handed back through [`Tree::take_released`].
//!
//! Path safety: every path (entry names, intermediate symlinks, hard-link
//! targets) is resolved inside the image as if it were chrooted: a leading
//! `/` means the image root, `..` at the root stays at the root, and a
//! symlink on the way is followed with its target resolved the same way.
//! So no entry can land outside the image, and an archive that writes
//! through a symlink gets what the same archive gets when extracted in a
//! chroot: the file lands where the link points within the image. Entries
//! are refused only when resolution cannot succeed at all (a non-directory
//! on the way, a symlink loop, a missing hard-link target).

use std::collections::{BTreeMap, VecDeque};

use super::extent::Extent;
use super::inode::Time;
use super::xattr::Attr;

pub type NodeId = usize;
pub const ROOT: NodeId = 0;
/// The kernel's limit on symlinks followed in one lookup.
const MAX_SYMLINKS: u32 = 40;
const LOST_FOUND: &[u8] = b"lost+found";

#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Permission bits including setuid, setgid and sticky (0o7777).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub xattrs: Vec<Attr>,
}

#[derive(Debug)]
pub enum Kind {
    File { size: u64, extents: Vec<Extent> },
    Dir { children: BTreeMap<Vec<u8>, Link> },
    Symlink(Vec<u8>),
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
}

/// A directory entry: the node and the layer that last wrote it, which
/// decides what whiteouts and opaque markers of a layer may hide (only
/// what lower layers wrote).
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub node: NodeId,
    layer: u32,
}

#[derive(Debug)]
pub struct Node {
    pub meta: Meta,
    pub kind: Kind,
    /// Names pointing at this node (hard links); directories have one.
    pub names: u32,
}

impl Node {
    pub fn new(meta: Meta, kind: Kind) -> Node {
        Node {
            meta,
            kind,
            names: 0,
        }
    }

    fn children(&self) -> Option<&BTreeMap<Vec<u8>, Link>> {
        match &self.kind {
            Kind::Dir { children } => Some(children),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("passes through {0:?}, which is not a directory")]
    NotADirectory(String),
    #[error("passes through more than 40 symbolic links")]
    SymlinkLoop,
    #[error("has a name component longer than 255 bytes")]
    NameTooLong,
    #[error("names the root or a `..` but is not a directory")]
    NotAName,
    #[error("is a hard link to {0:?}, which is not in the image")]
    LinkTargetMissing(String),
    #[error("is a hard link to {0:?}, which is a directory")]
    LinkToDirectory(String),
}

/// Where a path leads: an existing directory itself (the path was `/`,
/// `.`, or ended in `..`), or a name inside a directory.
#[derive(Debug, PartialEq, Eq)]
pub enum Place {
    Dir(NodeId),
    Entry(NodeId, Vec<u8>),
}

pub struct Tree {
    nodes: Vec<Option<Node>>,
    released: Vec<Extent>,
}

impl Tree {
    pub fn new(root: Meta) -> Tree {
        let mut root = Node::new(
            root,
            Kind::Dir {
                children: BTreeMap::new(),
            },
        );
        root.names = 1;
        Tree {
            nodes: vec![Some(root)],
            released: Vec::new(),
        }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes[id].as_ref().expect("live node")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id].as_mut().expect("live node")
    }

    fn children_mut(&mut self, dir: NodeId) -> &mut BTreeMap<Vec<u8>, Link> {
        match &mut self.node_mut(dir).kind {
            Kind::Dir { children } => children,
            _ => unreachable!("callers pass directories"),
        }
    }

    pub fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.node(dir).children()?.get(name).map(|l| l.node)
    }

    /// Extents of files that no name refers to any more.
    pub fn take_released(&mut self) -> Vec<Extent> {
        std::mem::take(&mut self.released)
    }

    /// Resolves `path` up to its last component. With `create`, missing
    /// directories on the way are made (tar streams may omit parents) with
    /// `implicit` metadata; without, a missing directory gives `Ok(None)`.
    pub fn place(
        &mut self,
        path: &[u8],
        create: Option<(&Meta, u32)>,
    ) -> Result<Option<Place>, PathError> {
        let mut parts: Vec<&[u8]> = path
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        if parts.iter().any(|c| c.len() > 255) {
            return Err(PathError::NameTooLong);
        }
        let last = match parts.pop() {
            None => return Ok(Some(Place::Dir(ROOT))),
            Some(b"..") => {
                parts.push(b"..");
                return Ok(self.walk(&parts, create)?.map(Place::Dir));
            }
            Some(last) => last.to_vec(),
        };
        Ok(self
            .walk(&parts, create)?
            .map(|dir| Place::Entry(dir, last)))
    }

    /// Follows directory components from the root like a chrooted kernel
    /// would: the stack of directories walked gives `..`, and a symlink's
    /// components are spliced into the remaining work.
    fn walk(
        &mut self,
        parts: &[&[u8]],
        create: Option<(&Meta, u32)>,
    ) -> Result<Option<NodeId>, PathError> {
        let mut stack = vec![ROOT];
        let mut todo: VecDeque<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let mut followed = 0;
        while let Some(part) = todo.pop_front() {
            let dir = *stack.last().expect("root stays");
            if part == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let Some(id) = self.child(dir, &part) else {
                let Some((meta, layer)) = create else {
                    return Ok(None);
                };
                let id = self.insert(
                    dir,
                    part,
                    Node::new(
                        meta.clone(),
                        Kind::Dir {
                            children: BTreeMap::new(),
                        },
                    ),
                    layer,
                );
                stack.push(id);
                continue;
            };
            match &self.node(id).kind {
                Kind::Dir { .. } => stack.push(id),
                Kind::Symlink(target) => {
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err(PathError::SymlinkLoop);
                    }
                    if target.starts_with(b"/") {
                        stack.truncate(1);
                    }
                    for t in target.split(|&c| c == b'/').rev() {
                        if !t.is_empty() && t != b"." {
                            todo.push_front(t.to_vec());
                        }
                    }
                }
                _ => {
                    return Err(PathError::NotADirectory(
                        String::from_utf8_lossy(&part).into(),
                    ));
                }
            }
        }
        Ok(Some(*stack.last().expect("root stays")))
    }

    fn insert(&mut self, dir: NodeId, name: Vec<u8>, mut node: Node, layer: u32) -> NodeId {
        node.names = 1;
        let id = self.nodes.len();
        self.nodes.push(Some(node));
        self.children_mut(dir)
            .insert(name, Link { node: id, layer });
        id
    }

    /// Puts an entry at `dir/name` with OCI semantics: a directory over a
    /// directory only takes the new metadata (contents merge), anything
    /// else replaces what was there.
    pub fn put(&mut self, dir: NodeId, name: Vec<u8>, node: Node, layer: u32) {
        if let Some(old) = self.child(dir, &name) {
            if let (Kind::Dir { .. }, Kind::Dir { .. }) = (&self.node(old).kind, &node.kind) {
                self.node_mut(old).meta = node.meta;
                self.children_mut(dir)
                    .get_mut(&name)
                    .expect("present")
                    .layer = layer;
                return;
            }
            self.unlink(dir, &name);
        }
        self.insert(dir, name, node, layer);
    }

    /// Metadata of an existing directory named by a whole path (`./`).
    pub fn set_dir_meta(&mut self, dir: NodeId, meta: Meta) {
        self.node_mut(dir).meta = meta;
    }

    /// A hard link at `dir/name` to the node at `target` (not followed if
    /// it is a symlink, as link(2) does).
    pub fn link(
        &mut self,
        dir: NodeId,
        name: Vec<u8>,
        target: &[u8],
        layer: u32,
    ) -> Result<(), PathError> {
        let shown = || String::from_utf8_lossy(target).into_owned();
        let id = match self.place(target, None)? {
            Some(Place::Entry(tdir, tname)) => self.child(tdir, &tname),
            Some(Place::Dir(_)) => return Err(PathError::LinkToDirectory(shown())),
            None => None,
        }
        .ok_or_else(|| PathError::LinkTargetMissing(shown()))?;
        if matches!(self.node(id).kind, Kind::Dir { .. }) {
            return Err(PathError::LinkToDirectory(shown()));
        }
        if self.child(dir, &name) == Some(id) {
            return Ok(());
        }
        // Count the new name first: the entry being replaced may be a
        // directory that holds the target, which must outlive it.
        self.node_mut(id).names += 1;
        if self.child(dir, &name).is_some() {
            self.unlink(dir, &name);
        }
        self.children_mut(dir)
            .insert(name, Link { node: id, layer });
        Ok(())
    }

    /// `.wh.NAME`: hides NAME as written by lower layers.
    pub fn whiteout(&mut self, dir: NodeId, name: &[u8], layer: u32) {
        let lower = self
            .node(dir)
            .children()
            .and_then(|c| c.get(name))
            .is_some_and(|l| l.layer < layer);
        if lower {
            self.unlink(dir, name);
        }
    }

    /// `.wh..wh..opq`: hides everything lower layers put under `dir`, while
    /// keeping what this layer wrote, wherever in the archive it came.
    pub fn opaque(&mut self, dir: NodeId, layer: u32) {
        let entries: Vec<(Vec<u8>, Link)> = match self.node(dir).children() {
            Some(c) => c.iter().map(|(n, l)| (n.clone(), *l)).collect(),
            None => return,
        };
        for (name, link) in entries {
            let is_dir = matches!(self.node(link.node).kind, Kind::Dir { .. });
            if is_dir {
                self.opaque(link.node, layer);
            }
            let keeps_new = is_dir && !self.node(link.node).children().expect("dir").is_empty();
            if link.layer < layer && !keeps_new {
                self.unlink(dir, &name);
            }
        }
    }

    fn unlink(&mut self, dir: NodeId, name: &[u8]) {
        let link = self.children_mut(dir).remove(name).expect("present");
        self.release(link.node);
    }

    fn release(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        node.names -= 1;
        if node.names > 0 {
            return;
        }
        let node = self.nodes[id].take().expect("live node");
        match node.kind {
            Kind::Dir { children } => children.into_values().for_each(|l| self.release(l.node)),
            Kind::File { extents, .. } => self.released.extend(extents),
            _ => {}
        }
    }

    /// Adds /lost+found if the layers did not bring one (or removed it):
    /// e2fsck expects it, and needs it to reconnect orphans.
    pub fn ensure_lost_found(&mut self, meta: Meta) {
        if !matches!(
            self.child(ROOT, LOST_FOUND).map(|id| &self.node(id).kind),
            Some(Kind::Dir { .. })
        ) {
            self.put(
                ROOT,
                LOST_FOUND.to_vec(),
                Node::new(
                    meta,
                    Kind::Dir {
                        children: BTreeMap::new(),
                    },
                ),
                0,
            );
        }
    }

    /// Every live node once with its parent directory, breadth first from
    /// the root (whose parent is itself), so siblings get neighbouring inode
    /// numbers and `ls -l` reads neighbouring inodes.
    pub fn breadth_first(&self) -> Vec<(NodeId, NodeId)> {
        let mut order = vec![(ROOT, ROOT)];
        let mut seen = vec![false; self.nodes.len()];
        seen[ROOT] = true;
        let mut i = 0;
        while i < order.len() {
            let dir = order[i].0;
            if let Some(children) = self.node(dir).children() {
                for link in children.values() {
                    if !std::mem::replace(&mut seen[link.node], true) {
                        order.push((link.node, dir));
                    }
                }
            }
            i += 1;
        }
        order
    }

    /// One more than the largest node id ever handed out.
    pub fn capacity(&self) -> usize {
        self.nodes.len()
    }

    /// The directory's entries in name order.
    pub fn entries(&self, dir: NodeId) -> impl Iterator<Item = (&[u8], NodeId)> {
        self.node(dir)
            .children()
            .into_iter()
            .flatten()
            .map(|(n, l)| (n.as_slice(), l.node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tree: &mut Tree, path: &str, layer: u32, start: u64) {
        let meta = Meta::default();
        match tree
            .place(path.as_bytes(), Some((&meta, layer)))
            .unwrap()
            .unwrap()
        {
            Place::Entry(dir, name) => {
                let extents = vec![Extent {
                    logical: 0,
                    start,
                    len: 1,
                }];
                tree.put(
                    dir,
                    name,
                    Node::new(meta.clone(), Kind::File { size: 1, extents }),
                    layer,
                )
            }
            Place::Dir(_) => panic!("{path} is a dir"),
        }
    }

    fn lookup(tree: &mut Tree, path: &str) -> Option<NodeId> {
        match tree.place(path.as_bytes(), None).ok()?? {
            Place::Entry(dir, name) => tree.child(dir, &name),
            Place::Dir(d) => Some(d),
        }
    }

    fn symlink(tree: &mut Tree, path: &str, target: &str) {
        let Some(Place::Entry(dir, name)) = tree
            .place(path.as_bytes(), Some((&Meta::default(), 1)))
            .unwrap()
        else {
            panic!()
        };
        tree.put(
            dir,
            name,
            Node::new(Meta::default(), Kind::Symlink(target.into())),
            1,
        );
    }

    #[test]
    fn paths_stay_inside_the_root() {
        let mut t = Tree::new(Meta::default());
        file(&mut t, "../../etc/passwd", 1, 1);
        file(&mut t, "/abs/x", 1, 2);
        assert!(lookup(&mut t, "etc/passwd").is_some());
        assert!(lookup(&mut t, "abs/x").is_some());
        symlink(&mut t, "evil", "/../../../tmp");
        file(&mut t, "evil/owned", 1, 3);
        assert!(lookup(&mut t, "tmp/owned").is_some());
        symlink(&mut t, "rel", "../../etc");
        file(&mut t, "rel/shadow", 1, 4);
        assert!(lookup(&mut t, "etc/shadow").is_some());
        symlink(&mut t, "loop", "loop");
        let meta = Meta::default();
        assert_eq!(
            t.place(b"loop/x", Some((&meta, 1))),
            Err(PathError::SymlinkLoop)
        );
        assert!(matches!(
            t.place(b"etc/passwd/x", Some((&meta, 1))),
            Err(PathError::NotADirectory(_))
        ));
        assert_eq!(t.place(b"a/..", None), Ok(None));
        assert_eq!(t.place(b"etc/..", None), Ok(Some(Place::Dir(ROOT))));
    }

    #[test]
    fn whiteouts_hide_lower_layers_only() {
        let mut t = Tree::new(Meta::default());
        file(&mut t, "a/b/x", 1, 10);
        file(&mut t, "a/y", 1, 11);
        file(&mut t, "a/b/new", 2, 12);
        let a = lookup(&mut t, "a").unwrap();
        t.opaque(a, 2);
        assert!(lookup(&mut t, "a/y").is_none());
        assert!(lookup(&mut t, "a/b/x").is_none());
        assert!(lookup(&mut t, "a/b/new").is_some());
        let mut freed: Vec<u64> = t.take_released().iter().map(|e| e.start).collect();
        freed.sort();
        assert_eq!(freed, [10, 11]);
        file(&mut t, "a/c", 2, 13);
        t.whiteout(a, b"c", 2);
        assert!(
            lookup(&mut t, "a/c").is_some(),
            "same-layer entries survive"
        );
        t.whiteout(a, b"b", 3);
        assert!(lookup(&mut t, "a/b").is_none());
        assert_eq!(t.take_released()[0].start, 12);
    }

    #[test]
    fn hard_links_keep_data_until_the_last_name_goes() {
        let mut t = Tree::new(Meta::default());
        file(&mut t, "bin/a", 1, 7);
        let bin = lookup(&mut t, "bin").unwrap();
        t.link(bin, b"b".to_vec(), b"/bin/a", 2).unwrap();
        assert_eq!(lookup(&mut t, "bin/a"), lookup(&mut t, "bin/b"));
        let a = lookup(&mut t, "bin/a").unwrap();
        assert_eq!(t.node(a).names, 2);
        t.whiteout(bin, b"a", 3);
        assert!(t.take_released().is_empty());
        file(&mut t, "bin/b", 3, 8);
        assert_eq!(t.take_released()[0].start, 7);
        assert_eq!(
            t.link(bin, b"c".to_vec(), b"nope", 3),
            Err(PathError::LinkTargetMissing("nope".into()))
        );
        assert_eq!(
            t.link(bin, b"c".to_vec(), b"bin", 3),
            Err(PathError::LinkToDirectory("bin".into()))
        );
    }

    #[test]
    fn file_and_directory_replace_each_other() {
        let mut t = Tree::new(Meta::default());
        file(&mut t, "d/inner", 1, 5);
        file(&mut t, "d", 2, 6);
        let d = lookup(&mut t, "d").unwrap();
        assert!(matches!(t.node(d).kind, Kind::File { .. }));
        assert_eq!(t.take_released()[0].start, 5);
        let Some(Place::Entry(root, name)) = t.place(b"d", None).unwrap() else {
            panic!()
        };
        t.put(
            root,
            name,
            Node::new(
                Meta::default(),
                Kind::Dir {
                    children: BTreeMap::new(),
                },
            ),
            3,
        );
        file(&mut t, "d/again", 3, 9);
        let d = lookup(&mut t, "d").unwrap();
        assert!(matches!(t.node(d).kind, Kind::Dir { .. }));
        assert_eq!(t.take_released()[0].start, 6);
    }
}
