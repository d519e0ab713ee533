"""Extended planner statistics for the stored queries (stored-query engineer).

The multi-valued code table is queried by (attribute, value); the two columns are strongly
dependent (a value belongs to one attribute), and without extended statistics PostgreSQL
multiplies their selectivities and misestimates code-filtered FindDocuments by orders of
magnitude, which can flip it to a bad plan at 1 M entries (docs/design-notes.md, "Measured
ceilings").  PostgreSQL only; a no-op on SQLite.
"""

from django.db import migrations

STATISTICS = "xds_registry_registrycode_attr_value_stats"
TABLE = "xds_registry_registrycode"


def create_statistics(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE STATISTICS IF NOT EXISTS {STATISTICS} (dependencies, mcv) ON attribute, value FROM {TABLE}")


def drop_statistics(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP STATISTICS IF EXISTS {STATISTICS}")


class Migration(migrations.Migration):

    dependencies = [
        ("xds_registry", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_statistics, drop_statistics),
    ]
