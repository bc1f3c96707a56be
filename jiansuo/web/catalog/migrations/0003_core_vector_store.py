# Vectors move to the core's store (jiansuo.search): on PostgreSQL a pgvector table the store
# creates and owns itself (jiansuo_vectors), elsewhere the index folder. The site's own
# PhotoFeature and CodeLayer tables (PostgreSQL only, see routers.py) are dropped: their vectors are
# derived data, and `python -m jiansuo.web sync_index` embeds the catalogue's photos into the new
# store. CatalogVersion gets its one row and the triggers that bump it on every change to products
# and photos, whatever makes the change (saves, bulk writes, raw SQL).

from django.db import migrations, models

_TABLES = ("catalog_product", "catalog_productimage")
_BUMP = "UPDATE catalog_catalogversion SET version = version + 1 WHERE id = 1"


def install_triggers(apps, schema_editor):
    apps.get_model("catalog", "CatalogVersion").objects.using(schema_editor.connection.alias).get_or_create(pk=1)
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cur:
        if vendor == "sqlite":
            for table in _TABLES:
                for op in ("INSERT", "UPDATE", "DELETE"):
                    cur.execute(f"CREATE TRIGGER IF NOT EXISTS {table}_version_{op.lower()} AFTER {op} ON {table} "
                                f"BEGIN {_BUMP}; END")
        elif vendor == "postgresql":
            cur.execute("CREATE OR REPLACE FUNCTION catalog_bump_version() RETURNS trigger LANGUAGE plpgsql AS "
                        f"$$ BEGIN {_BUMP}; RETURN NULL; END $$")
            for table in _TABLES:
                # Once per statement, not per row: a bulk import bumps it once per INSERT.
                cur.execute(f"CREATE OR REPLACE TRIGGER {table}_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION catalog_bump_version()")


def remove_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cur:
        if vendor == "sqlite":
            for table in _TABLES:
                for op in ("insert", "update", "delete"):
                    cur.execute(f"DROP TRIGGER IF EXISTS {table}_version_{op}")
        elif vendor == "postgresql":
            for table in _TABLES:
                cur.execute(f"DROP TRIGGER IF EXISTS {table}_version ON {table}")
            cur.execute("DROP FUNCTION IF EXISTS catalog_bump_version()")


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0002_scale_out'),
    ]

    operations = [
        # ProductImage.feature was a join on the existing `file` column: nothing to drop in the database.
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.RemoveField(model_name='productimage', name='feature')]),
        migrations.DeleteModel(name='PhotoFeature'),
        migrations.DeleteModel(name='CodeLayer'),
        migrations.CreateModel(
            name='CatalogVersion',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('version', models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(install_triggers, remove_triggers),
    ]
