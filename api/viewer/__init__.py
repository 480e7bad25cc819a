"""Browser viewer: static page, per-task media description and range-served videos."""
