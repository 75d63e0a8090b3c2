//! A kubectl-style text table: capitalised headers, columns padded with spaces, no borders, so
//! the output reads like `kubectl get` and stays friendly to `grep`, `awk` and `cut`.

/// Spaces between columns (kubectl's tabwriter uses three).
const GAP: usize = 3;

/// Rows of cells under a header; render with [`Table::render`].
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<I, S>(header: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells render empty and extra cells get a column without a header.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    /// The table as lines ending in `\n`. Widths count characters, not bytes, so a cell such as
    /// `≤ 2.50` does not push its neighbours out of line; the last column is not padded, so lines
    /// carry no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.header).chain(&self.rows) {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut text = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = line.get(i).map_or("", String::as_str);
                text.push_str(cell);
                if i + 1 < columns {
                    text.extend(std::iter::repeat_n(' ', w - width(cell) + GAP));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Display width of a cell; characters are counted as one column each, which holds for the text
/// the client prints (ASCII plus symbols such as `≤` and `×`).
pub(crate) fn width(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_start_at_the_same_offset_in_every_line() {
        let mut t = Table::new(["NAME", "PRICE", "READY"]);
        t.row(["gn-a", "≤ 2.50", "True"]);
        t.row(["gn-longer-name", "1.90", "False"]);
        let out = t.render();
        assert_eq!(
            out,
            "NAME             PRICE    READY\n\
             gn-a             ≤ 2.50   True\n\
             gn-longer-name   1.90     False\n"
        );
    }

    #[test]
    fn empty_last_cells_leave_no_trailing_spaces() {
        let mut t = Table::new(["A", "B"]);
        t.row(["x"]);
        assert_eq!(t.render(), "A   B\nx\n");
    }

    #[test]
    fn a_header_alone_renders() {
        assert_eq!(Table::new(["ID", "PHASE"]).render(), "ID   PHASE\n");
    }
}
