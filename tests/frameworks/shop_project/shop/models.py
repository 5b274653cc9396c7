from django.db import models


class Order(models.Model):
    status = models.CharField(max_length=20, default="new")
    touched = models.IntegerField(default=0)

    class Meta:
        app_label = "shop"
