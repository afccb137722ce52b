IGNORE_INDEX = -100  # target value of positions that carry no loss
