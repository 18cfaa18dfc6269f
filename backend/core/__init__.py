"""Pure decision and measurement functions over numpy columns: no Flask, no peewee, no Mesa."""
