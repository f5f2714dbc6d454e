"""Generation engines, one per file, behind `cai.engines.base.Engine`."""
