# Product.hidden: staff hide a product (e.g. a duplicate listing) from searches, pages and the API.
# SQLite adds the column by rebuilding the product table, which drops the triggers that keep
# CatalogVersion (0003): they are installed again after it (a no-op where they survived).

from importlib import import_module

from django.db import migrations, models

install_triggers = import_module("jiansuo.web.catalog.migrations.0003_core_vector_store").install_triggers


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0003_core_vector_store'),
    ]

    operations = [
        migrations.AddField(
            model_name='product',
            name='hidden',
            field=models.BooleanField(db_index=True, default=False, verbose_name='hidden'),
        ),
        migrations.RunPython(install_triggers, migrations.RunPython.noop),
    ]
