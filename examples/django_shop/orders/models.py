from django.db import models


class Order(models.Model):
    item = models.CharField(max_length=100)
    confirmed = models.BooleanField(default=False)
    shipped = models.BooleanField(default=False)


class Receipt(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE)
    attempt = models.IntegerField()
