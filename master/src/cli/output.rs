//! Printing: aligned tables like kubectl's, YAML and JSON.

use serde_json::Value;

/// The Accept header that asks the master for a server-side table.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// Which columns of a server table to print and how wide they are.
pub struct TableLayout {
    columns: Vec<(usize, String)>,
    with_namespace: bool,
    widths: Vec<usize>,
}

impl TableLayout {
    /// A layout for `table` (a `meta.k8s.io/v1` Table): priority-0 columns,
    /// all of them when `wide`, and a NAMESPACE column first when `with_namespace`.
    pub fn new(table: &Value, wide: bool, with_namespace: bool) -> TableLayout {
        let columns: Vec<(usize, String)> = table["columnDefinitions"]
            .as_array()
            .map(|defs| {
                defs.iter()
                    .enumerate()
                    .filter(|(_, d)| wide || d["priority"].as_i64().unwrap_or(0) == 0)
                    .map(|(i, d)| (i, d["name"].as_str().unwrap_or("").to_uppercase()))
                    .collect()
            })
            .unwrap_or_default();
        let mut layout = TableLayout {
            columns,
            with_namespace,
            widths: Vec::new(),
        };
        layout.widths = layout.header().iter().map(|h| h.chars().count()).collect();
        layout
    }

    fn header(&self) -> Vec<String> {
        let mut header = Vec::new();
        if self.with_namespace {
            header.push("NAMESPACE".to_string());
        }
        header.extend(self.columns.iter().map(|(_, n)| n.clone()));
        header
    }

    /// The cells of every row of `table`, as text.
    pub fn rows(&self, table: &Value) -> Vec<Vec<String>> {
        table["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| {
                        let mut cells = Vec::new();
                        if self.with_namespace {
                            cells.push(
                                row["object"]["metadata"]["namespace"]
                                    .as_str()
                                    .unwrap_or("")
                                    .to_string(),
                            );
                        }
                        for (i, _) in &self.columns {
                            cells.push(cell_text(&row["cells"][*i]));
                        }
                        cells
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Widen the columns to fit `rows`.
    pub fn fit(&mut self, rows: &[Vec<String>]) {
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = self.widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
    }

    /// Format one line.
    pub fn line(&self, cells: &[String]) -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let width = self.widths.get(i).copied().unwrap_or(0);
                out.push_str(&format!("{cell:<width$}   "));
            }
        }
        out.trim_end().to_string()
    }

    /// The header line.
    pub fn header_line(&self) -> String {
        self.line(&self.header())
    }
}

fn cell_text(cell: &Value) -> String {
    match cell {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

/// Print `table` with a header; returns the layout for later rows (watch).
pub fn print_table(table: &Value, wide: bool, with_namespace: bool) -> TableLayout {
    let mut layout = TableLayout::new(table, wide, with_namespace);
    let rows = layout.rows(table);
    layout.fit(&rows);
    println!("{}", layout.header_line());
    for row in rows {
        println!("{}", layout.line(&row));
    }
    layout
}

/// Print a value as YAML.
pub fn print_yaml(value: &Value) {
    match serde_yaml::to_string(value) {
        Ok(text) => print!("{text}"),
        Err(e) => eprintln!("error: cannot render YAML: {e}"),
    }
}

/// Print a value as indented JSON.
pub fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot render JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aligns_columns_and_hides_wide_ones() {
        let table = json!({
            "columnDefinitions": [
                {"name": "Name", "priority": 0},
                {"name": "Status", "priority": 0},
                {"name": "IP", "priority": 1}
            ],
            "rows": [
                {"cells": ["web", "Running", "10.0.0.1"], "object": {"metadata": {"namespace": "default"}}},
                {"cells": ["database-1", "Pending", null], "object": {"metadata": {"namespace": "prod"}}}
            ]
        });
        let mut layout = TableLayout::new(&table, false, false);
        let rows = layout.rows(&table);
        layout.fit(&rows);
        assert_eq!(layout.header_line(), "NAME         STATUS");
        assert_eq!(layout.line(&rows[0]), "web          Running");
        let mut wide = TableLayout::new(&table, true, true);
        let rows = wide.rows(&table);
        wide.fit(&rows);
        assert_eq!(wide.header_line(), "NAMESPACE   NAME         STATUS    IP");
        assert_eq!(
            wide.line(&rows[1]),
            "prod        database-1   Pending   <none>"
        );
    }
}
