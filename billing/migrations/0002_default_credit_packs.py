"""Default credit packs, so a fresh install can sell credits as soon as Stripe keys are set.

Credits are whole renders (multiples of 22); bigger packs cost less per render. No Stripe
price ids: checkout sends the price inline until staff link packs to Stripe prices.
Reversing removes only packs nobody has bought.
"""

from django.db import migrations

DEFAULT_PACKS = [
    # name, credits, price in cents (USD)
    ("Starter", 50 * 22, 1000),
    ("Studio", 250 * 22, 4500),
    ("Scale", 1000 * 22, 16000),
]


def create_packs(apps, schema_editor):
    CreditPack = apps.get_model("billing", "CreditPack")
    for name, credits, price in DEFAULT_PACKS:
        CreditPack.objects.get_or_create(
            name=name, defaults={"credits": credits, "price": price, "currency": "usd", "active": True}
        )


def remove_packs(apps, schema_editor):
    CreditPack = apps.get_model("billing", "CreditPack")
    CreditPack.objects.filter(
        name__in=[name for name, _, _ in DEFAULT_PACKS], purchases__isnull=True
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(create_packs, remove_packs)]
