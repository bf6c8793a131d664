//! Keyset pagination shared by every list: ids strictly between two cursors, read
//! forwards or (for `last`) backwards, one extra row telling whether more exist.

/// One page of a list, in keyset terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub after: Option<String>,
    pub before: Option<String>,
    pub limit: usize,
    /// Read from the end (`last`) instead of the start (`first`).
    pub from_end: bool,
}

impl Page {
    /// `AND id > ? AND id < ? ORDER BY id … LIMIT ?` for the page, with its binds in
    /// order (the limit is inlined: it is a number the server computed).
    pub fn keyset_sql(&self, id_column: &str) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut binds = Vec::new();
        if let Some(after) = &self.after {
            sql.push_str(&format!(" AND {id_column} > ?"));
            binds.push(after.clone());
        }
        if let Some(before) = &self.before {
            sql.push_str(&format!(" AND {id_column} < ?"));
            binds.push(before.clone());
        }
        let direction = if self.from_end { "DESC" } else { "ASC" };
        sql.push_str(&format!(
            " ORDER BY {id_column} {direction} LIMIT {}",
            self.limit + 1
        ));
        (sql, binds)
    }
}
