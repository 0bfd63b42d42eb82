"""The peer as a user runs it: read the training and test CSVs with pandas, fit Surprise's SVD
(its defaults: 100 factors, 20 epochs, lr 0.005, reg 0.02, init std 0.1), predict the test
ratings, print the RMSE. Run in a fresh process by benchmarks/command_speed.py.

    python benchmarks/_surprise_svd.py TRAIN.csv TEST.csv
"""

import sys

import pandas as pd
from surprise import SVD, Dataset, Reader, accuracy

train = pd.read_csv(sys.argv[1])
test = pd.read_csv(sys.argv[2])
reader = Reader(rating_scale=(float(train["rating"].min()), float(train["rating"].max())))
trainset = Dataset.load_from_df(train[["user_id", "movie_id", "rating"]], reader).build_full_trainset()
algo = SVD(random_state=0).fit(trainset)
pred = algo.test(list(test[["user_id", "movie_id", "rating"]].itertuples(index=False, name=None)))
print(f"rmse {accuracy.rmse(pred, verbose=False):.6f}")
