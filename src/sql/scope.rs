//! What the names of a statement's FROM clauses stand for, where an expression stands: shared
//! by the name resolution (`names`) and the subqueries over a row's lists (`correlated`).

use arrow::datatypes::DataType;

/// What a name in FROM stands for.
#[derive(Clone, Debug)]
pub(crate) struct Binding {
    /// The name it is referred to by (an alias, or the table's name as written).
    pub alias: Option<String>,
    /// Its row type; None for a subquery or a common table expression (not looked into).
    pub ty: Option<DataType>,
    /// The resource type, for a resource table.
    pub resource: Option<String>,
}

/// The bindings in scope where an expression stands, innermost last.
pub(crate) struct Scopes<'a>(pub &'a [Vec<Binding>]);

impl<'a> Scopes<'a> {
    /// The binding a name qualifies by.
    pub fn named(&self, name: &str) -> Option<&'a Binding> {
        self.0.iter().rev().flat_map(|s| s.iter().rev()).find(|b| {
            b.alias
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case(name))
        })
    }

    /// The one resource table of the innermost scope that has a column `name`.
    pub fn column_owner(&self, name: &str) -> Option<&'a Binding> {
        for scope in self.0.iter().rev() {
            let mut found = scope.iter().filter(|b| {
                b.resource.is_some()
                    && matches!(&b.ty, Some(DataType::Struct(f)) if f.iter().any(|f| f.name() == name))
            });
            if let Some(b) = found.next() {
                return found.next().is_none().then_some(b);
            }
        }
        None
    }
}
